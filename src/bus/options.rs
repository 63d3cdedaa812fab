//! The trailing `a{sv}` every method takes (and CreateVolume's `config`), parsed at the
//! edge into typed values: a key the method does not know is an `InvalidArgument`
//! naming the key (typos must not pass silently), and so is a value of the wrong type.
//! Integers are accepted in any D-Bus integer width that holds the value, because
//! generic clients (busctl, gdbus, python) pick widths freely.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::bus::error::{quote, BusError};

/// The option every method knows: never prompt for authentication.
pub const NO_USER_INTERACTION: &str = "auth.no_user_interaction";

/// The raw map a method receives.
pub type RawOptions = HashMap<String, OwnedVariant>;

/// A checked option map: only known keys, values read by type on demand.
#[derive(Debug)]
pub struct Options {
    what: &'static str,
    /// The object the call is about, named in every error ("volume x in pool p").
    object: String,
    map: RawOptions,
}

impl Options {
    /// Method options: `known` plus [`NO_USER_INTERACTION`], for a call on `object`.
    pub fn parse(
        map: RawOptions,
        known: &[&str],
        object: &dyn std::fmt::Display,
    ) -> Result<Options, BusError> {
        let options = Options::check(map, known, "option", &[NO_USER_INTERACTION], object)?;
        options.bool(NO_USER_INTERACTION)?;
        Ok(options)
    }

    /// A map of exactly the keys in `known`, each a `what` in a refusal: CreateVolume's
    /// `config` ("configuration key"), SetRevisionDetails' `details` ("detail").
    pub fn parse_map(
        map: RawOptions,
        known: &[&str],
        what: &'static str,
        object: &dyn std::fmt::Display,
    ) -> Result<Options, BusError> {
        Options::check(map, known, what, &[], object)
    }

    fn check(
        map: RawOptions,
        known: &[&str],
        what: &'static str,
        always: &[&str],
        object: &dyn std::fmt::Display,
    ) -> Result<Options, BusError> {
        let object = object.to_string();
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|key| !known.contains(key) && !always.contains(key))
            .collect();
        unknown.sort_unstable();
        match unknown.first() {
            None => Ok(Options { what, object, map }),
            Some(key) => Err(BusError::invalid(format!(
                "{object}: unknown {what} {}; known: {}",
                quote(key),
                known_list(known, always)
            ))),
        }
    }

    /// Whether the caller asked never to be prompted.
    pub fn no_user_interaction(&self) -> bool {
        self.bool(NO_USER_INTERACTION)
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, BusError> {
        self.typed(key, "a boolean (b)", |v| match v {
            Variant::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, BusError> {
        self.typed(key, "a string (s)", |v| match v {
            Variant::Str(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
    }

    /// A non-negative integer (`t` preferred; any integer type whose value fits).
    pub fn unsigned(&self, key: &str) -> Result<Option<u64>, BusError> {
        self.integer(key, "a non-negative integer below 2^64", |n| {
            u64::try_from(n).ok()
        })
    }

    /// A signed integer (`i` or `x` preferred; any integer type whose value fits).
    pub fn signed(&self, key: &str) -> Result<Option<i64>, BusError> {
        self.integer(key, "an integer from -2^63 to 2^63 - 1", |n| {
            i64::try_from(n).ok()
        })
    }

    /// An integer of any type, read by its value: one that does not fit is refused by
    /// its value (`not -512`), anything else by its type.
    fn integer<T>(
        &self,
        key: &str,
        expected: &str,
        fit: impl Fn(i128) -> Option<T>,
    ) -> Result<Option<T>, BusError> {
        let value = self.map.get(key).map(|v| unwrap_variant(v));
        match value.and_then(integer_of) {
            Some(n) if fit(n).is_none() => Err(BusError::invalid(format!(
                "{}: the {} {} must be {expected}, not {n}",
                self.object,
                self.what,
                quote(key),
            ))),
            _ => self.typed(key, expected, |v| integer_of(v).and_then(&fit)),
        }
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        read: impl Fn(&Variant<'_>) -> Option<T>,
    ) -> Result<Option<T>, BusError> {
        let Some(value) = self.map.get(key) else {
            return Ok(None);
        };
        match read(unwrap_variant(value)) {
            Some(v) => Ok(Some(v)),
            None => Err(BusError::invalid(format!(
                "{}: the {} {} must be {expected}, not a value of type {}",
                self.object,
                self.what,
                quote(key),
                value.value_signature()
            ))),
        }
    }
}

/// A value sent as `v` inside the `v` of the map (some clients nest) is read through.
fn unwrap_variant<'a>(value: &'a Variant<'a>) -> &'a Variant<'a> {
    match value {
        Variant::Variant(inner) => unwrap_variant(inner),
        other => other,
    }
}

fn integer_of(value: &Variant<'_>) -> Option<i128> {
    Some(match value {
        Variant::U8(n) => i128::from(*n),
        Variant::I16(n) => i128::from(*n),
        Variant::U16(n) => i128::from(*n),
        Variant::I32(n) => i128::from(*n),
        Variant::U32(n) => i128::from(*n),
        Variant::I64(n) => i128::from(*n),
        Variant::U64(n) => i128::from(*n),
        _ => return None,
    })
}

fn known_list(known: &[&str], always: &[&str]) -> String {
    let all: Vec<&str> = known.iter().chain(always).copied().collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(entries: Vec<(&str, Variant<'static>)>) -> RawOptions {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedVariant::try_from(v).unwrap()))
            .collect()
    }

    #[test]
    fn unknown_key_is_invalid_argument_naming_the_key() {
        let err = Options::parse(
            raw(vec![("alow_shrink", Variant::Bool(true))]),
            &["allow_shrink"],
            &"volume v in pool p",
        )
        .unwrap_err();
        assert!(err
            .message()
            .starts_with("Volume v in pool p: unknown option"));
        assert_eq!(err.name(), "org.qubes.Storage.Error.InvalidArgument");
        assert!(err.message().contains("\"alow_shrink\""));
    }

    #[test]
    fn no_user_interaction_is_known_everywhere() {
        let options = Options::parse(
            raw(vec![(NO_USER_INTERACTION, Variant::Bool(true))]),
            &[],
            &"x",
        )
        .unwrap();
        assert!(options.no_user_interaction());
        assert!(!Options::parse(RawOptions::new(), &[], &"x")
            .unwrap()
            .no_user_interaction());
    }

    #[test]
    fn no_user_interaction_of_the_wrong_type_is_refused() {
        let err = Options::parse(
            raw(vec![(NO_USER_INTERACTION, Variant::Str("yes".into()))]),
            &[],
            &"x",
        )
        .unwrap_err();
        assert_eq!(
            err.kind(),
            Some(qubes_storage_engine::ErrorKind::InvalidArgument)
        );
    }

    #[test]
    fn config_refuses_the_auth_option() {
        let err = Options::parse_map(
            raw(vec![(NO_USER_INTERACTION, Variant::Bool(true))]),
            &["size"],
            "configuration key",
            &"x",
        );
        assert!(err.is_err());
    }

    #[test]
    fn integers_of_any_width_that_fit_are_accepted() {
        let options = Options::parse(
            raw(vec![
                ("a", Variant::U32(7)),
                ("b", Variant::I32(-1)),
                ("c", Variant::I64(-5)),
            ]),
            &["a", "b", "c"],
            &"x",
        )
        .unwrap();
        assert_eq!(options.unsigned("a").unwrap(), Some(7));
        assert_eq!(options.signed("b").unwrap(), Some(-1));
        assert_eq!(options.signed("a").unwrap(), Some(7));
        // An integer that does not fit is refused by its value, not its type.
        let negative = options.unsigned("c").unwrap_err().message().to_owned();
        assert!(
            negative.ends_with("\"c\" must be a non-negative integer below 2^64, not -5."),
            "{negative}"
        );
        assert_eq!(options.unsigned("missing").unwrap(), None);
    }

    #[test]
    fn wrong_type_names_key_and_expected_type() {
        let options = Options::parse(raw(vec![("rw", Variant::U32(1))]), &["rw"], &"x").unwrap();
        let err = options.bool("rw").unwrap_err();
        let text = err.message().to_owned();
        assert!(
            text.contains("\"rw\"") && text.contains("boolean") && text.contains("type u"),
            "{text}"
        );
    }

    /// A seeded fuzz of the option maps callers send: random keys (known, unknown,
    /// long, odd bytes) with values of every basic type, nested or not. Parsing never
    /// panics; it accepts exactly the maps of known keys; every refusal is an
    /// InvalidArgument sentence of bounded length; every typed read of an accepted map
    /// either gives the value or refuses its type.
    #[test]
    fn fuzzed_option_maps_are_parsed_or_refused_in_one_short_sentence() {
        let known = ["allow_shrink", "size", "dir_path", "revisions_to_keep"];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut map = RawOptions::new();
            let mut all_known = true;
            for _ in 0..next() % 4 {
                let key = match next() % 5 {
                    0 => known[(next() % 4) as usize].to_owned(),
                    1 => NO_USER_INTERACTION.to_owned(),
                    2 => "k".repeat((next() % 5000) as usize),
                    3 => String::from_utf8_lossy(&next().to_le_bytes()).into_owned(),
                    _ => format!("x{}", next() % 100),
                };
                let is_known = known.contains(&key.as_str()) || key == NO_USER_INTERACTION;
                let value = match next() % 7 {
                    0 => Variant::Bool(next() % 2 == 0),
                    1 => Variant::U64(next()),
                    2 => Variant::I64(next() as i64),
                    3 => Variant::I32(next() as i32),
                    4 => Variant::Str("s".repeat((next() % 300) as usize).into()),
                    5 => Variant::Variant(Box::new(Variant::U32(next() as u32))),
                    _ => Variant::F64(1.5),
                };
                if map
                    .insert(key, OwnedVariant::try_from(value).unwrap())
                    .is_none()
                {
                    all_known &= is_known;
                }
            }
            match Options::parse(map, &known, &"volume v in pool p") {
                Ok(options) => {
                    assert!(all_known, "an unknown key was accepted");
                    for key in known.iter().chain([&NO_USER_INTERACTION]) {
                        let _ = options.bool(key);
                        let _ = options.string(key);
                        let _ = options.unsigned(key);
                        let _ = options.signed(key);
                    }
                }
                Err(err) => {
                    assert_eq!(
                        err.kind(),
                        Some(qubes_storage_engine::ErrorKind::InvalidArgument)
                    );
                    assert!(err.message().len() < 600, "{}", err.message().len());
                }
            }
        }
    }
}
