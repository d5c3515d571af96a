//! The one clock of tre: a moment ([`Timestamp`]), its RFC 3339 text, and
//! [`now`], the wall clock every crate reads. The governance domain and the
//! job runtime share it and nothing else.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A moment, as milliseconds since the Unix epoch, UTC. The domain never
/// reads a clock: callers pass [`now`] in. Written as RFC 3339 text
/// (`2026-12-07T17:45:00.123Z`) wherever it is serialized; read from that
/// text (any offset) or from epoch milliseconds (documents stored before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// The wall clock as a [`Timestamp`].
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Timestamp(millis)
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time (2026-12-07T17:45:00Z) or epoch milliseconds")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("a time too far in the future"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).ok_or_else(|| {
                    E::custom(format!(
                        "expected an RFC 3339 time such as 2026-12-07T17:45:00Z, got {v:?}"
                    ))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 time in UTC, to the millisecond"
        })
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

impl Timestamp {
    /// RFC 3339 in UTC, to the millisecond: `2026-12-07T17:45:00.123Z`.
    pub fn rfc3339(self) -> String {
        let days = self.0.div_euclid(Self::MILLIS_PER_DAY);
        let ms = self.0.rem_euclid(Self::MILLIS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }

    /// An RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let num = |from: usize, len: usize| -> Option<i64> {
            let part = text.get(from..from + len)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (h, mi, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        let days_in = [
            31,
            if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
                29
            } else {
                28
            },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if !(1..=12).contains(&mo)
            || d < 1
            || d > days_in[(mo - 1) as usize]
            || h > 23
            || mi > 59
            || s > 60
        {
            return None;
        }
        let mut at = 19;
        let mut millis = 0;
        if b.get(at) == Some(&b'.') {
            let digits = b[at + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 {
                return None;
            }
            let frac = &text[at + 1..at + 1 + digits];
            let first3: String = frac.chars().chain("000".chars()).take(3).collect();
            millis = first3.parse::<i64>().ok()?;
            at += 1 + digits;
        }
        let offset_min = match &text[at..] {
            "Z" | "z" => 0,
            zone if zone.len() == 6 && matches!(&zone[..1], "+" | "-") && &zone[3..4] == ":" => {
                let oh = num(at + 1, 2)?;
                let om = num(at + 4, 2)?;
                let sign = if &zone[..1] == "-" { -1 } else { 1 };
                sign * (oh * 60 + om)
            }
            _ => return None,
        };
        let seconds =
            days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset_min * 60;
        Some(Self(seconds * 1000 + millis))
    }

    pub const MILLIS_PER_DAY: i64 = 86_400_000;

    pub fn plus_days(self, days: u32) -> Self {
        Self(self.0 + i64::from(days) * Self::MILLIS_PER_DAY)
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn rfc3339_both_ways() {
        for (millis, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_796_665_500_123, "2026-12-07T17:45:00.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(Timestamp(millis).rfc3339(), text);
            assert_eq!(Timestamp::parse_rfc3339(text), Some(Timestamp(millis)));
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-12-07T18:45:00+01:00"),
            Timestamp::parse_rfc3339("2026-12-07T17:45:00Z")
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-12-07",
            "2026-12-07T17:45:00",
            "2026-12-07T17:45:00.Z",
            "yesterday",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn written_as_text_read_from_text_or_epoch_millis() {
        let at = Timestamp(1_796_665_500_123);
        let json = serde_json::to_value(at).unwrap();
        assert_eq!(json, "2026-12-07T17:45:00.123Z");
        assert_eq!(serde_json::from_value::<Timestamp>(json).unwrap(), at);
        // documents stored before
        assert_eq!(
            serde_json::from_value::<Timestamp>(serde_json::json!(1_796_665_500_123_i64)).unwrap(),
            at
        );
        assert!(serde_json::from_value::<Timestamp>(serde_json::json!("soon")).is_err());
    }
}
