//! Quantities as users write them: durations (`"30s"`, `"1m 30s"`, `"30d"`), percentages
//! (`"5%"`), sizes (`"512MB"`, `"1GiB"`).
//!
//! Each type parses with [`std::str::FromStr`], (de)serializes through that parser, and describes
//! itself in the JSON Schema with a `format` that the config checker
//! (`crate::check::schema`) validates with the very same parser, so the error a user sees and
//! the value the program uses can never disagree.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The JSON Schema `format` names this module owns.
pub mod format {
    /// A [`super::Duration`].
    pub const DURATION: &str = "duration";
    /// A [`super::Percent`].
    pub const PERCENT: &str = "percent";
    /// A [`super::Size`].
    pub const SIZE: &str = "size";
    /// A crontab schedule, checked with croner.
    pub const CRON: &str = "cron";
    /// An IANA time zone name, checked against the system's tz database.
    pub const TIMEZONE: &str = "timezone";
    /// A [`super::Duration`], or `never`.
    pub const REPEAT: &str = "repeat";
}

/// A non-negative length of time, written with units: `"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`,
/// `"30d"` (a day is 24 hours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The standard-library duration.
    pub fn std(self) -> std::time::Duration {
        self.0
    }
}

/// Why a quantity did not parse; the message is shown to users as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnitError {
    /// What was wrong.
    pub message: String,
    /// How to write it instead.
    pub hint: &'static str,
}

const DURATION_HINT: &str =
    "write a number with a unit, for example \"500ms\", \"30s\", \"5m\", \"1h 30m\" or \"30d\"";
const PERCENT_HINT: &str = "write a percentage such as \"5%\" or \"0.5%\"";
const SIZE_HINT: &str = "write a size such as \"512KB\", \"10MB\" or \"1GiB\"";

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |message: String| UnitError {
            message,
            hint: DURATION_HINT,
        };
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(bad("empty duration".into()));
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("duration `{s}` has no unit")));
        }
        let span: jiff::Span = trimmed
            .parse()
            .map_err(|_| bad(format!("`{s}` is not a duration")))?;
        if span.is_negative() {
            return Err(bad(format!("duration `{s}` is negative")));
        }
        let signed = span
            .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
            .map_err(|_| bad(format!("`{s}` is not a fixed length of time")))?;
        let std = std::time::Duration::try_from(signed)
            .map_err(|_| bad(format!("duration `{s}` is out of range")))?;
        Ok(Duration(std))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        // Whole units, largest first, so that "90s" prints as "1m 30s" and round-trips.
        let mut ms = d.as_millis();
        let mut parts = Vec::new();
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= size {
                parts.push(format!("{}{unit}", ms / size));
                ms %= size;
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// A share written as a percentage, `"5%"` or `"0.5%"`; a bare integer `5` also means 5 %.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    /// `value` percent (0–100).
    pub fn new(value: f64) -> Option<Self> {
        (value.is_finite() && (0.0..=100.0).contains(&value)).then_some(Percent(value))
    }

    /// The value in percent, 0–100.
    pub fn percent(self) -> f64 {
        self.0
    }

    /// The value as a ratio, 0–1.
    pub fn ratio(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |message: String| UnitError {
            message,
            hint: PERCENT_HINT,
        };
        let Some(number) = s.trim().strip_suffix('%') else {
            return Err(bad(format!("`{s}` is not a percentage (no `%`)")));
        };
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{s}` is not a percentage")))?;
        Percent::new(value)
            .ok_or_else(|| bad(format!("percentage `{s}` is not between 0% and 100%")))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A size in bytes, written `"512KB"`, `"10MB"`, `"1GiB"`, or as a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|_| UnitError {
                message: format!("`{s}` is not a size"),
                hint: SIZE_HINT,
            })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

/// Parses a crontab schedule the way the runtime will (five fields, or six with seconds).
pub fn check_cron(s: &str) -> Result<(), UnitError> {
    croner::Cron::from_str(s).map(|_| ()).map_err(|e| UnitError {
        message: format!("`{s}` is not a cron schedule: {e}"),
        hint: "write five fields: minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\"",
    })
}

/// Checks an IANA time zone name against the system's time zone database.
pub fn check_timezone(s: &str) -> Result<(), UnitError> {
    jiff::tz::TimeZone::get(s)
        .map(|_| ())
        .map_err(|_| UnitError {
            message: format!("unknown time zone `{s}`"),
            hint: "use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\"",
        })
}

/// Checks a string against one of the [`format`]s; unknown formats pass.
pub fn check_format(format: &str, s: &str) -> Result<(), UnitError> {
    match format {
        format::DURATION => s.parse::<Duration>().map(|_| ()),
        format::PERCENT => s.parse::<Percent>().map(|_| ()),
        format::SIZE => s.parse::<Size>().map(|_| ()),
        format::CRON => check_cron(s),
        format::TIMEZONE => check_timezone(s),
        format::REPEAT if s.trim() == "never" => Ok(()),
        format::REPEAT => s.parse::<Duration>().map(|_| ()).map_err(|_| UnitError {
            message: format!("`{s}` is neither a duration nor `never`"),
            hint: "write how often, e.g. \"15m\" or \"4h\", or \"never\"",
        }),
        _ => Ok(()),
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}
string_serde!(Duration);
string_serde!(Percent);

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

struct UnitVisitor<T>(std::marker::PhantomData<T>, &'static str);

impl<T> de::Visitor<'_> for UnitVisitor<T>
where
    T: FromStr<Err = UnitError> + FromInteger,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(|e: UnitError| E::custom(e.message))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_integer(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_i64(i64::try_from(v).map_err(E::custom)?)
    }
}

trait FromInteger: Sized {
    fn from_integer(v: i64) -> Result<Self, String>;
}

impl FromInteger for Duration {
    fn from_integer(v: i64) -> Result<Self, String> {
        Err(format!("duration `{v}` has no unit; {DURATION_HINT}"))
    }
}

impl FromInteger for Percent {
    fn from_integer(v: i64) -> Result<Self, String> {
        Percent::new(v as f64).ok_or_else(|| format!("percentage {v} is not between 0 and 100"))
    }
}

impl FromInteger for Size {
    fn from_integer(v: i64) -> Result<Self, String> {
        u64::try_from(v)
            .map(Size)
            .map_err(|_| format!("size {v} is negative"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(
            Default::default(),
            "a duration such as \"30s\"",
        ))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(
            Default::default(),
            "a percentage such as \"5%\"",
        ))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(Default::default(), "a size such as \"10MB\""))
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": format::DURATION,
            "description": "A length of time with units: \"500ms\", \"30s\", \"5m\", \"1h 30m\", \"30d\".",
            "examples": ["30s", "5m"],
        })
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "integer"],
            "format": format::PERCENT,
            "minimum": 0,
            "maximum": 100,
            "description": "A percentage: \"5%\", \"0.5%\"; a bare integer means percent.",
            "examples": ["5%"],
        })
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "integer"],
            "format": format::SIZE,
            "minimum": 0,
            "description": "A size: \"512KB\", \"10MB\", \"1GiB\", or a number of bytes.",
            "examples": ["10MB"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_round_trip() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h 30m", 5_400_000),
            ("1h30m", 5_400_000),
            ("30d", 2_592_000_000),
            ("90s", 90_000),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms, "{text}");
            let again: Duration = d.to_string().parse().unwrap();
            assert_eq!(again, d, "{text} printed as {d}");
        }
        assert_eq!(Duration::from_secs(90).to_string(), "1m 30s");
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(
            "30".parse::<Duration>()
                .unwrap_err()
                .message
                .contains("no unit")
        );
        assert!(
            "-5s"
                .parse::<Duration>()
                .unwrap_err()
                .message
                .contains("negative")
        );
        assert!("soon".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn percents() {
        assert_eq!("5%".parse::<Percent>().unwrap().ratio(), 0.05);
        assert_eq!("0.5%".parse::<Percent>().unwrap().percent(), 0.5);
        assert!("5".parse::<Percent>().is_err());
        assert!("120%".parse::<Percent>().is_err());
        let p: Percent = serde_json::from_str("25").unwrap();
        assert_eq!(p.percent(), 25.0);
    }

    #[test]
    fn sizes() {
        assert_eq!("1GiB".parse::<Size>().unwrap().bytes(), 1 << 30);
        assert_eq!("10MB".parse::<Size>().unwrap().bytes(), 10_000_000);
        assert!("lots".parse::<Size>().is_err());
    }

    #[test]
    fn cron_and_timezones() {
        assert!(check_cron("*/5 * * * *").is_ok());
        assert!(check_cron("61 * * * *").is_err());
        assert!(check_timezone("UTC").is_ok());
        assert!(check_timezone("Mars/Olympus").is_err());
    }
}
