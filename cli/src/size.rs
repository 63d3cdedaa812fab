//! Byte sizes as people type and read them: `4096`, `512M`, `1.5G`, `2GiB`, `1T`.
//! Units are powers of 1024 (K, M, G, T; case-insensitive, with an optional `iB` or
//! `B` suffix, so `1G`, `1GB` and `1GiB` are all 2^30 bytes, as in qvm-volume and
//! udisksctl). A fraction must come out as a whole number of bytes: `1.5G` is fine,
//! `0.1K` (102.4 bytes) is refused rather than silently rounded. Printing picks the
//! largest unit that keeps the number at least 1 and shows one decimal: `2.0 GiB`.

const UNITS: [(char, u32); 4] = [('K', 1), ('M', 2), ('G', 3), ('T', 4)];
const PRINT_UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];

/// Parses a size argument; the error is a sentence for the user.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (number, multiplier) = split_unit(trimmed)
        .ok_or_else(|| format!("invalid size {text:?}: expected e.g. 4096, 512M, 1.5G or 2GiB"))?;
    let bytes = scale(number, multiplier).map_err(|why| format!("invalid size {text:?}: {why}"))?;
    Ok(bytes)
}

/// Splits `1.5GiB` into (`1.5`, 2^30). `None` when the suffix is not a known unit.
fn split_unit(text: &str) -> Option<(&str, u64)> {
    let upper = text.to_ascii_uppercase();
    let without_b = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let had_suffix = without_b.len() != upper.len();
    let last = without_b.chars().last()?;
    if let Some(&(_, power)) = UNITS.iter().find(|(unit, _)| *unit == last) {
        let number_len = without_b.len() - 1;
        return Some((&text[..number_len], 1024u64.pow(power)));
    }
    // A bare `B` suffix means bytes; a bare `iB` without a unit letter means nothing.
    if had_suffix && upper.ends_with("IB") {
        return None;
    }
    Some((&text[..without_b.len()], 1))
}

/// `number` × `multiplier`, exactly, for a decimal `number` with an optional fraction.
fn scale(number: &str, multiplier: u64) -> Result<u64, &'static str> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err("not a number");
    }
    let whole_bytes = parse_digits(whole)?
        .checked_mul(multiplier)
        .ok_or("too large")?;
    let fraction_bytes = scale_fraction(fraction, multiplier)?;
    whole_bytes.checked_add(fraction_bytes).ok_or("too large")
}

/// The bytes of `.fraction` × `multiplier`; refused unless whole.
fn scale_fraction(fraction: &str, multiplier: u64) -> Result<u64, &'static str> {
    let digits = fraction.trim_end_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    if digits.len() > 18 {
        return Err("too many decimal places");
    }
    let numerator = u128::from(parse_digits(digits)?) * u128::from(multiplier);
    let denominator = 10u128.pow(digits.len() as u32);
    if numerator % denominator != 0 {
        return Err("not a whole number of bytes");
    }
    u64::try_from(numerator / denominator).map_err(|_| "too large")
}

fn parse_digits(digits: &str) -> Result<u64, &'static str> {
    if digits.is_empty() {
        return Ok(0);
    }
    digits.parse::<u64>().map_err(|_| "too large")
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
    fn overflow_is_refused() {
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
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
        assert_eq!(format_size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn printed_sizes_parse_back() {
        for bytes in [1024, 2 * GIB, GIB + GIB / 2, 512 << 20] {
            let printed = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&printed), Ok(bytes));
        }
    }
}
