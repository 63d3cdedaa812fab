//! Byte sizes as people type and read them: `4096`, `512M`, `1.5G`, `2GiB`, `1T`.
//! Units are powers of 1024 (K, M, G, T, P, E; case-insensitive, with an optional `iB`
//! or `B` suffix, so `1G`, `1GB` and `1GiB` are all 2^30 bytes, as in qvm-volume and
//! udisksctl). A fraction must come out as a whole number of bytes: `1.5G` is fine,
//! `0.1K` (102.4 bytes) is refused rather than silently rounded. Printing picks the
//! largest unit that keeps the number at least 1 and shows one decimal: `2.0 GiB`.
//!
//! Volume sizes are also checked the way the service checks them (contract rev 2,
//! `docs/dbus-api.md`): a whole number of 512-byte sectors, at least one, below 2^63
//! bytes. Checking here first lets the message name the value the user typed.

const UNITS: [(char, u32); 6] = [('K', 1), ('M', 2), ('G', 3), ('T', 4), ('P', 5), ('E', 6)];
const PRINT_UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// The sector size: every volume size is a multiple of it.
pub const SECTOR: u64 = 512;
/// Volume sizes stay below this (the service refuses 2^63 bytes and more).
pub const SIZE_LIMIT: u64 = 1 << 63;

/// Parses a size argument; the error is a sentence for the user.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = |why: String| format!("invalid size {text:?}: {why}");
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(invalid("a size cannot be negative".to_owned()));
    }
    let (number, unit) = split_unit(trimmed).map_err(invalid)?;
    scale(number, unit).map_err(|why| invalid(why.describe(number, unit)))
}

/// Parses the size of a volume: a whole, positive number of sectors below 2^63.
pub fn parse_volume_size(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    check_volume_size(bytes).map_err(|why| format!("invalid size {text:?}: {why}"))
}

/// Why `bytes` is not a volume size, as the end of a sentence.
pub fn check_volume_size(bytes: u64) -> Result<u64, String> {
    if bytes == 0 {
        return Err("a volume holds at least one 512-byte sector".to_owned());
    }
    if bytes >= SIZE_LIMIT {
        return Err(format!(
            "{} is too large (volumes stay below 8 EiB)",
            format_size(bytes)
        ));
    }
    if bytes % SECTOR != 0 {
        let below = bytes / SECTOR * SECTOR;
        let above = below + SECTOR;
        let nearest = match below {
            0 => format!("the nearest size is {above}"),
            _ => format!("the nearest sizes are {below} and {above}"),
        };
        let unit = if bytes == 1 { "byte" } else { "bytes" };
        return Err(format!(
            "{bytes} {unit} is not a whole number of 512-byte sectors ({nearest})"
        ));
    }
    Ok(bytes)
}

/// A unit letter and its multiplier.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unit {
    letter: Option<char>,
    multiplier: u64,
}

/// Splits `1.5GiB` into (`1.5`, G). An unknown unit is an error naming it.
fn split_unit(text: &str) -> Result<(&str, Unit), String> {
    if text.is_empty() {
        return Err("expected a number such as 4096, 512M, 1.5G or 2GiB".to_owned());
    }
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_len);
    if number.is_empty() {
        return Err(format!("{text:?} does not start with a number"));
    }
    let unit = parse_unit(suffix)?;
    Ok((number, unit))
}

/// `""`, `B`, `K`, `KB`, `KiB`, … (case-insensitive).
fn parse_unit(suffix: &str) -> Result<Unit, String> {
    let upper = suffix.to_ascii_uppercase();
    if upper.is_empty() || upper == "B" {
        return Ok(Unit {
            letter: None,
            multiplier: 1,
        });
    }
    let letter_part = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let mut letters = letter_part.chars();
    let known = match (letters.next(), letters.next()) {
        (Some(letter), None) => UNITS.iter().find(|(unit, _)| *unit == letter),
        _ => None,
    };
    match known {
        Some(&(letter, power)) => Ok(Unit {
            letter: Some(letter),
            multiplier: 1024u64.pow(power),
        }),
        None => Err(format!(
            "unknown unit {suffix:?} (units are K, M, G, T, P and E, powers of 1024; e.g. 512M)"
        )),
    }
}

/// Why a number with a valid unit is still not a size.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ScaleError {
    NotANumber,
    TooLarge,
    TooManyDecimals,
    FractionOfAByte,
}

impl ScaleError {
    fn describe(self, number: &str, unit: Unit) -> String {
        match self {
            ScaleError::NotANumber => format!("{number:?} is not a number"),
            ScaleError::TooLarge => {
                let unit = unit.letter.map(|l| format!(" {l}iB")).unwrap_or_default();
                format!("{number}{unit} is more than a 64-bit byte count holds (16 EiB)")
            }
            ScaleError::TooManyDecimals => "too many decimal places".to_owned(),
            ScaleError::FractionOfAByte => "not a whole number of bytes".to_owned(),
        }
    }
}

/// `number` × `multiplier`, exactly, for a decimal `number` with an optional fraction.
fn scale(number: &str, unit: Unit) -> Result<u64, ScaleError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(ScaleError::NotANumber);
    }
    let whole_bytes = parse_digits(whole)?
        .checked_mul(unit.multiplier)
        .ok_or(ScaleError::TooLarge)?;
    let fraction_bytes = scale_fraction(fraction, unit.multiplier)?;
    whole_bytes
        .checked_add(fraction_bytes)
        .ok_or(ScaleError::TooLarge)
}

/// The bytes of `.fraction` × `multiplier`; refused unless whole.
fn scale_fraction(fraction: &str, multiplier: u64) -> Result<u64, ScaleError> {
    let digits = fraction.trim_end_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    if digits.len() > 18 {
        return Err(ScaleError::TooManyDecimals);
    }
    let numerator = u128::from(parse_digits(digits)?) * u128::from(multiplier);
    let denominator = 10u128.pow(digits.len() as u32);
    if numerator % denominator != 0 {
        return Err(ScaleError::FractionOfAByte);
    }
    u64::try_from(numerator / denominator).map_err(|_| ScaleError::TooLarge)
}

fn parse_digits(digits: &str) -> Result<u64, ScaleError> {
    if digits.is_empty() {
        return Ok(0);
    }
    digits.parse::<u64>().map_err(|_| ScaleError::TooLarge)
}

/// Formats a byte count for people: `100 B`, `4.0 KiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < PRINT_UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", PRINT_UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn plain_number_is_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096B"), Ok(4096));
    }

    #[test]
    fn units_are_powers_of_1024() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(GIB));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn ib_and_b_suffixes_and_lowercase_are_accepted() {
        assert_eq!(parse_size("2GiB"), Ok(2 * GIB));
        assert_eq!(parse_size("2GB"), Ok(2 * GIB));
        assert_eq!(parse_size("2g"), Ok(2 * GIB));
        assert_eq!(parse_size("2gib"), Ok(2 * GIB));
        assert_eq!(parse_size(" 3M "), Ok(3 << 20));
    }

    #[test]
    fn whole_fractions_are_exact() {
        assert_eq!(parse_size("1.5G"), Ok(GIB + GIB / 2));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("1.0"), Ok(1));
        assert_eq!(parse_size(".5M"), Ok(512 << 10));
        assert_eq!(parse_size("2.50G"), Ok(2 * GIB + GIB / 2));
    }

    #[test]
    fn fraction_of_a_byte_is_refused() {
        assert!(parse_size("0.1K").unwrap_err().contains("whole number"));
        assert!(parse_size("1.5").is_err());
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "", "G", "abc", "1X", "1.2.3G", "-1G", "1 G", "iB", "1iB", "1e3", ".",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn unknown_units_are_named() {
        let error = parse_size("2X").unwrap_err();
        assert!(error.contains("unknown unit \"X\""), "{error}");
        let error = parse_size("3 GB").unwrap_err();
        assert!(error.contains("unknown unit \" GB\""), "{error}");
    }

    #[test]
    fn negative_sizes_say_so() {
        assert_eq!(
            parse_size("-5G").unwrap_err(),
            "invalid size \"-5G\": a size cannot be negative"
        );
    }

    #[test]
    fn peta_and_exa_units_parse_until_the_byte_count_overflows() {
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("15E"), Ok(15 << 60));
        let error = parse_size("16E").unwrap_err();
        assert!(error.contains("16 EiB is more than"), "{error}");
    }

    #[test]
    fn volume_sizes_are_whole_sectors() {
        assert_eq!(parse_volume_size("1K"), Ok(1024));
        assert_eq!(parse_volume_size("512"), Ok(512));
        let error = parse_volume_size("1000").unwrap_err();
        assert!(
            error.contains("not a whole number of 512-byte sectors"),
            "{error}"
        );
        assert!(error.contains("512 and 1024"), "{error}");
        assert!(parse_volume_size("1").unwrap_err().contains("size is 512)"));
    }

    #[test]
    fn volume_sizes_are_positive_and_below_8_eib() {
        assert!(parse_volume_size("0").unwrap_err().contains("at least one"));
        assert!(parse_volume_size("8E").unwrap_err().contains("too large"));
        assert_eq!(parse_volume_size("7E"), Ok(7 << 60));
    }

    #[test]
    fn overflow_is_refused() {
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216T").unwrap_err().contains("more than"));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn small_sizes_print_as_bytes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
    }

    #[test]
    fn sizes_print_with_one_decimal_in_the_largest_fitting_unit() {
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(2 * GIB), "2.0 GiB");
        assert_eq!(format_size(GIB + GIB / 2), "1.5 GiB");
        assert_eq!(format_size(512 << 20), "512.0 MiB");
        assert_eq!(format_size(3 << 40), "3.0 TiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn printed_sizes_parse_back() {
        for bytes in [1024, 2 * GIB, GIB + GIB / 2, 512 << 20] {
            let printed = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&printed), Ok(bytes));
        }
    }
}
