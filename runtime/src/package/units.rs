//! Human-readable sizes ("64 MiB") and durations ("2s", "500ms") used by
//! manifests, policies and the CLI.

use std::time::Duration;

/// A size, duration or count that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a size (expected e.g. \"64 MiB\")")]
    NotASize(String),
    #[error("{0:?} is not a duration (expected e.g. \"2s\" or \"500ms\")")]
    NotADuration(String),
    #[error("{text:?}: unknown unit {unit:?}")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?}: a duration needs a unit (ms, s, m, h)")]
    MissingUnit(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} is not a non-negative integer")]
    NotACount(String),
}

/// Parses a byte size: a number with an optional unit (`B`, `KiB`, `MiB`,
/// `GiB`, `KB`, `MB`, `GB`; case-insensitive, optional space).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    let (number, unit) =
        number_and_unit(text).ok_or_else(|| UnitError::NotASize(text.to_owned()))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(UnitError::UnknownUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| UnitError::TooLarge(text.to_owned()))
}

/// Splits `64_000 MiB` into its number (underscores allowed) and the rest.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number.replace('_', "").parse().ok()?;
    Some((number, unit))
}

/// Formats a byte size with a binary unit, exactly when it is a whole number
/// of that unit (`64 MiB`), otherwise in bytes.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    format!("{bytes} B")
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let (number, unit) =
        number_and_unit(text).ok_or_else(|| UnitError::NotADuration(text.to_owned()))?;
    let millis = match unit.trim() {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" | "min" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        "" => return Err(UnitError::MissingUnit(text.to_owned())),
        other => {
            return Err(UnitError::UnknownUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    }
    .ok_or_else(|| UnitError::TooLarge(text.to_owned()))?;
    Ok(Duration::from_millis(millis))
}

/// Formats a duration in the largest unit that represents it exactly.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis >= 1_000 && millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

/// Parses a plain count such as a fuel budget (`100000000` or `100_000_000`).
pub fn parse_count(text: &str) -> Result<u64, UnitError> {
    text.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| UnitError::NotACount(text.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64mib").unwrap(), 64 << 20);
        assert_eq!(parse_size("1_000").unwrap(), 1000);
        assert_eq!(parse_size("2 GB").unwrap(), 2_000_000_000);
        assert!(matches!(
            parse_size("12 XB"),
            Err(UnitError::UnknownUnit { unit, .. }) if unit == "xb"
        ));
        assert_eq!(parse_size("MiB"), Err(UnitError::NotASize("MiB".into())));
        assert!(matches!(
            parse_size("99999999999999 GiB"),
            Err(UnitError::TooLarge(_))
        ));
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(1000), "1000 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("5"), Err(UnitError::MissingUnit("5".into())));
        assert!(matches!(
            parse_duration("5 fortnights"),
            Err(UnitError::UnknownUnit { unit, .. }) if unit == "fortnights"
        ));
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
    }
}
