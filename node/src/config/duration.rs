//! Durations in configuration files: humantime strings (`"250ms"`, `"2s"`, `"5m"`, `"1d"`).
//! [`format`] prints one in its largest exact unit; the module's `serialize`/`deserialize`
//! (and [`option`]'s) are serde `with` helpers.
//!
//! What it does not do: accept bare numbers — a duration always says its unit.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error};

/// Formats a duration in the largest unit that is exact: `1d`, `5m`, `2s`, `1500ms`.
pub(super) fn format(d: Duration) -> String {
    const UNITS: [(u128, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(d).to_string();
    }
    match UNITS
        .iter()
        .find(|(unit, _)| ms > 0 && ms.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", ms / unit),
        None => format!("{ms}ms"),
    }
}

/// Serde: a duration as a humantime string.
pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Serde: a humantime string as a duration; the error quotes the text.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        D::Error::custom(format!(
            "{text:?} is not a duration such as \"250ms\", \"2s\" or \"1d\": {e}"
        ))
    })
}

/// Serde for an optional duration (absent: `None`; pair with `skip_serializing_if`).
pub(super) mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(in crate::config) fn serialize<S: Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}
