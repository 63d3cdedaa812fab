//! Reading D-Bus property maps (`a{sv}`, as `GetAll`, `GetManagedObjects`,
//! `InterfacesAdded` and `PropertiesChanged` carry them) and turning any D-Bus value
//! into JSON for `--json` and `monitor`.
//!
//! Getters are lenient: a property that is absent or of another type reads as `None`,
//! so a newer service with extra or changed properties never breaks a listing.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use zbus::{OwnedVariant, Variant};

pub type PropertyMap = HashMap<String, OwnedVariant>;

/// Looks through nested `v` wrappers.
fn unwrap_variant<'v>(variant: &'v Variant<'v>) -> &'v Variant<'v> {
    match variant {
        Variant::Variant(inner) => unwrap_variant(inner),
        other => other,
    }
}

/// Typed access to one property map.
pub struct Props<'m>(pub &'m PropertyMap);

impl Props<'_> {
    fn get(&self, name: &str) -> Option<&Variant<'_>> {
        self.0.get(name).map(|owned| unwrap_variant(owned))
    }

    pub fn string(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            Variant::Str(text) => Some(text.as_str().to_owned()),
            Variant::ObjectPath(path) => Some(path.as_str().to_owned()),
            _ => None,
        }
    }

    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Variant::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    pub fn uint(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            Variant::U64(n) => Some(*n),
            Variant::U32(n) => Some(u64::from(*n)),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Variant::I32(n) => Some(i64::from(*n)),
            Variant::I64(n) => Some(*n),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Variant::F64(n) => Some(*n),
            _ => None,
        }
    }

    /// An `as` or `ao` property.
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(Variant::Array(array)) => array.inner().iter().filter_map(text_of).collect(),
            _ => Vec::new(),
        }
    }

    /// An `a{sv}` property, as its own map.
    pub fn dict(&self, name: &str) -> PropertyMap {
        let Some(Variant::Dict(dict)) = self.get(name) else {
            return PropertyMap::new();
        };
        dict.iter()
            .filter_map(|(key, value)| {
                let owned = OwnedVariant::try_from(unwrap_variant(value).try_clone().ok()?).ok()?;
                Some((text_of(key)?, owned))
            })
            .collect()
    }

    /// An `a(sx)` property: the volume's revisions as (id, Unix seconds).
    pub fn revisions(&self, name: &str) -> Vec<(String, i64)> {
        let Some(Variant::Array(array)) = self.get(name) else {
            return Vec::new();
        };
        array.inner().iter().filter_map(revision_of).collect()
    }
}

/// One entry of `RevisionDetails` (`a(sxusbx)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionEntry {
    pub id: String,
    pub timestamp: i64,
    pub nanos: u32,
    pub description: String,
    pub pinned: bool,
    /// -1: not measured.
    pub exclusive: i64,
}

impl Props<'_> {
    /// The `RevisionDetails` property (empty when the service has none: an older one).
    pub fn revision_details(&self, name: &str) -> Vec<RevisionEntry> {
        let Some(Variant::Array(array)) = self.get(name) else {
            return Vec::new();
        };
        array.inner().iter().filter_map(revision_entry_of).collect()
    }
}

fn revision_entry_of(variant: &Variant<'_>) -> Option<RevisionEntry> {
    let Variant::Structure(fields) = variant else {
        return None;
    };
    match fields.fields() {
        [Variant::Str(id), Variant::I64(timestamp), Variant::U32(nanos), Variant::Str(description), Variant::Bool(pinned), Variant::I64(exclusive)] => {
            Some(RevisionEntry {
                id: id.as_str().to_owned(),
                timestamp: *timestamp,
                nanos: *nanos,
                description: description.as_str().to_owned(),
                pinned: *pinned,
                exclusive: *exclusive,
            })
        }
        _ => None,
    }
}

fn text_of(variant: &Variant<'_>) -> Option<String> {
    match unwrap_variant(variant) {
        Variant::Str(text) => Some(text.as_str().to_owned()),
        Variant::ObjectPath(path) => Some(path.as_str().to_owned()),
        _ => None,
    }
}

fn revision_of(variant: &Variant<'_>) -> Option<(String, i64)> {
    let Variant::Structure(fields) = variant else {
        return None;
    };
    match fields.fields() {
        [Variant::Str(id), Variant::I64(timestamp)] => Some((id.as_str().to_owned(), *timestamp)),
        _ => None,
    }
}

/// Any D-Bus value as JSON: numbers stay numbers, paths and signatures become strings,
/// dictionaries with string-like keys become objects, structures become arrays.
pub fn to_json(variant: &Variant<'_>) -> Json {
    match variant {
        Variant::U8(n) => Json::from(*n),
        Variant::Bool(flag) => Json::from(*flag),
        Variant::I16(n) => Json::from(*n),
        Variant::U16(n) => Json::from(*n),
        Variant::I32(n) => Json::from(*n),
        Variant::U32(n) => Json::from(*n),
        Variant::I64(n) => Json::from(*n),
        Variant::U64(n) => Json::from(*n),
        Variant::F64(n) => Json::from(*n),
        Variant::Str(text) => Json::from(text.as_str()),
        Variant::Signature(signature) => Json::from(signature.to_string()),
        Variant::ObjectPath(path) => Json::from(path.as_str()),
        Variant::Variant(inner) => to_json(inner),
        Variant::Array(array) => Json::Array(array.inner().iter().map(to_json).collect()),
        Variant::Dict(dict) => dict_to_json(dict.iter()),
        Variant::Structure(structure) => {
            Json::Array(structure.fields().iter().map(to_json).collect())
        }
        #[cfg(unix)]
        Variant::Fd(_) => Json::from("<fd>"),
    }
}

fn dict_to_json<'a, 'k: 'a, 'v: 'a>(
    entries: impl Iterator<Item = (&'a Variant<'k>, &'a Variant<'v>)>,
) -> Json {
    let mut object = Map::new();
    for (key, value) in entries {
        let key = match to_json(key) {
            Json::String(text) => text,
            other => other.to_string(),
        };
        object.insert(key, to_json(value));
    }
    Json::Object(object)
}

/// A whole property map as a JSON object, keys sorted.
pub fn map_to_json(map: &PropertyMap) -> Json {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let object = keys
        .into_iter()
        .map(|key| (key.clone(), to_json(&map[key])))
        .collect();
    Json::Object(object)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use zbus::{ObjectPath, Structure};

    pub fn owned(variant: Variant<'_>) -> OwnedVariant {
        OwnedVariant::try_from(variant).unwrap()
    }

    pub fn map(entries: Vec<(&str, Variant<'_>)>) -> PropertyMap {
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), owned(value)))
            .collect()
    }

    #[test]
    fn scalars_read_by_type() {
        let props = map(vec![
            ("Size", Variant::from(4096u64)),
            ("Rw", Variant::from(true)),
            ("RevisionsToKeep", Variant::from(-1i32)),
            ("Vid", Variant::from("appvms/a/b")),
            ("Progress", Variant::from(0.5f64)),
        ]);
        let props = Props(&props);
        assert_eq!(props.uint("Size"), Some(4096));
        assert_eq!(props.boolean("Rw"), Some(true));
        assert_eq!(props.int("RevisionsToKeep"), Some(-1));
        assert_eq!(props.string("Vid").as_deref(), Some("appvms/a/b"));
        assert_eq!(props.float("Progress"), Some(0.5));
    }

    #[test]
    fn absent_or_mistyped_property_reads_as_none() {
        let props = map(vec![("Size", Variant::from("big"))]);
        let props = Props(&props);
        assert_eq!(props.uint("Size"), None);
        assert_eq!(props.uint("Missing"), None);
        assert!(props.strings("Missing").is_empty());
    }

    #[test]
    fn object_path_arrays_read_as_strings() {
        let paths = vec![
            ObjectPath::try_from("/a").unwrap(),
            ObjectPath::try_from("/b").unwrap(),
        ];
        let props = map(vec![("Objects", Variant::from(paths))]);
        assert_eq!(Props(&props).strings("Objects"), ["/a", "/b"]);
    }

    #[test]
    fn revisions_read_as_id_and_timestamp() {
        let revisions = vec![
            ("1".to_owned(), 1_700_000_000i64),
            ("2".to_owned(), 1_700_000_100),
        ];
        let props = map(vec![("Revisions", Variant::from(revisions))]);
        assert_eq!(
            Props(&props).revisions("Revisions"),
            [
                ("1".to_owned(), 1_700_000_000),
                ("2".to_owned(), 1_700_000_100)
            ]
        );
    }

    #[test]
    fn usage_details_read_as_a_nested_map() {
        let mut details: HashMap<&str, Variant<'_>> = HashMap::new();
        details.insert("data_size", Variant::from(100u64));
        let props = map(vec![("UsageDetails", Variant::from(details))]);
        let nested = Props(&props).dict("UsageDetails");
        assert_eq!(Props(&nested).uint("data_size"), Some(100));
    }

    #[test]
    fn values_become_json() {
        let structure = Structure::from(("1", 5i64));
        assert_eq!(
            to_json(&Variant::from(structure)),
            serde_json::json!(["1", 5])
        );
        let path = ObjectPath::try_from("/x").unwrap();
        assert_eq!(to_json(&Variant::from(path)), serde_json::json!("/x"));
        let mut dict: HashMap<&str, u64> = HashMap::new();
        dict.insert("k", 1);
        assert_eq!(to_json(&Variant::from(dict)), serde_json::json!({"k": 1}));
    }
}
