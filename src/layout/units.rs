//! Humane units used by layout files: durations (`500ms`, `30s`, `5m`), byte sizes
//! (`512MiB`, `4GiB`) and percentages (`20%`).
//!
//! Each type deserializes from a YAML string and reports a bad value as a serde error, so
//! serde_yaml attaches the line and column of the offending scalar for us.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A duration written the way people write them: `500ms`, `30s`, `5m`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

/// The longest duration a layout may set: a year. Anything longer cannot mean anything a
/// supervisor should wait for, and far-off deadlines overflow clocks (`Instant + 2^64 s`
/// panics).
pub const MAX_DURATION: StdDuration = StdDuration::from_secs(365 * 24 * 3600);

/// A duration that must not be zero: how often something runs (`monitor.tick`,
/// `snapshot.interval`) or how long a window is. Zero is refused while parsing, with the
/// scalar's line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period(pub Duration);

/// A byte size: `512MiB`, `4GiB`, `100MB`, or a bare number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

/// A percentage such as `20%` (stored as a fraction of one: `0.2`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }
    pub const fn from_secs(secs: u64) -> Self {
        Self(StdDuration::from_secs(secs))
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // humantime accepts "0" as zero and rejects a number without a unit otherwise; we
        // insist on a unit everywhere so `30` is never silently read as 30 seconds or 30 ms.
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "invalid duration {s:?}: expected a number with a unit, e.g. 500ms, 30s, 5m, 1h"
            ));
        }
        let d = humantime::parse_duration(trimmed).map_err(|e| {
            if matches!(e, humantime::DurationError::NumberOverflow) {
                too_long(s)
            } else {
                format!(
                    "invalid duration {s:?}: expected a number with a unit, e.g. 500ms, 30s, 5m, 1h"
                )
            }
        })?;
        if d > MAX_DURATION {
            return Err(too_long(s));
        }
        Ok(Duration(d))
    }
}

fn too_long(s: &str) -> String {
    format!("invalid duration {s:?}: at most 365 days (365d)")
}

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d: Duration = s.parse()?;
        if d.0.is_zero() {
            return Err(format!(
                "invalid duration {s:?}: must be longer than zero, e.g. 1s"
            ));
        }
        Ok(Period(d))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let valid_start = trimmed.starts_with(|c: char| c.is_ascii_digit());
        match trimmed.parse::<bytesize::ByteSize>() {
            Ok(size) if valid_start => Ok(Size(size.as_u64())),
            _ => Err(format!(
                "invalid size {s:?}: expected a number with a unit, e.g. 512MiB, 4GiB"
            )),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl FromStr for Percent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("invalid percentage {s:?}: expected a number followed by %, e.g. 20%");
        let number = s.trim().strip_suffix('%').ok_or_else(err)?;
        let value: f64 = number.trim().parse().map_err(|_| err())?;
        if !value.is_finite() || value < 0.0 {
            return Err(err());
        }
        Ok(Percent(value / 100.0))
    }
}

/// Deserializes any `FromStr` unit from a YAML string (or a bare YAML number, which is
/// then judged by the same rules, so `30` gets the same "needs a unit" message as `"30"`).
fn deserialize_unit<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct UnitVisitor<T>(&'static str, std::marker::PhantomData<T>);

    impl<T: FromStr<Err = String>> Visitor<'_> for UnitVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }

    deserializer.deserialize_any(UnitVisitor(expecting, std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_unit(d, "a duration such as 500ms, 30s or 5m")
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_unit(d, "a duration longer than zero, such as 500ms, 30s or 5m")
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_unit(d, "a size such as 512MiB or 4GiB")
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_unit(d, "a percentage such as 20%")
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl serde::Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}%", self.0 * 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!("500ms".parse(), Ok(Duration::from_millis(500)));
        assert_eq!("30s".parse(), Ok(Duration::from_secs(30)));
        assert_eq!("5m".parse(), Ok(Duration::from_secs(300)));
        assert_eq!("1h 30m".parse(), Ok(Duration::from_secs(5400)));
        assert!(
            "30".parse::<Duration>()
                .unwrap_err()
                .contains("expected a number with a unit")
        );
        assert!("soon".parse::<Duration>().is_err());
        // Zero is a duration, but not a period; nothing may exceed a year.
        assert_eq!("0s".parse(), Ok(Duration::from_secs(0)));
        assert!(
            "0s".parse::<Period>()
                .unwrap_err()
                .contains("longer than zero")
        );
        assert_eq!("1ms".parse(), Ok(Period(Duration::from_millis(1))));
        assert_eq!("365d".parse(), Ok(Duration::from_secs(365 * 86400)));
        for huge in [
            "18446744073709551615s",
            "366d",
            "99999999999999999999999h",
            "2y",
        ] {
            assert!(
                huge.parse::<Duration>()
                    .unwrap_err()
                    .contains("at most 365 days"),
                "{huge}"
            );
        }
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("512MiB".parse(), Ok(Size(512 << 20)));
        assert_eq!("4GiB".parse(), Ok(Size(4 << 30)));
        assert_eq!("4 GiB".parse(), Ok(Size(4 << 30)));
        assert_eq!("100MB".parse(), Ok(Size(100_000_000)));
        assert!("lots".parse::<Size>().is_err());
        assert!("4 parsecs".parse::<Size>().is_err());
    }

    #[test]
    fn percents() {
        assert_eq!("20%".parse(), Ok(Percent(0.2)));
        assert_eq!("2.5 %".parse(), Ok(Percent(0.025)));
        assert!("20".parse::<Percent>().is_err());
        assert!("-5%".parse::<Percent>().is_err());
    }

    proptest! {
        #[test]
        fn duration_round_trips(ms in 1u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }

        #[test]
        fn duration_units_scale(n in 1u64..500_000) {
            prop_assert_eq!(format!("{n}ms").parse(), Ok(Duration::from_millis(n)));
            prop_assert_eq!(format!("{n}s").parse(), Ok(Duration::from_secs(n)));
            prop_assert_eq!(format!("{n}m").parse(), Ok(Duration::from_secs(n * 60)));
        }

        #[test]
        fn sizes_scale(n in 0u64..1_000_000) {
            prop_assert_eq!(format!("{n}KiB").parse(), Ok(Size(n << 10)));
            prop_assert_eq!(format!("{n}MiB").parse(), Ok(Size(n << 20)));
            prop_assert_eq!(format!("{n}GiB").parse(), Ok(Size(n << 30)));
        }

        #[test]
        fn size_display_round_trips(n in 0u64..(1u64 << 50)) {
            // Display rounds to one decimal, so compare within that precision.
            let shown = Size(n).to_string();
            let back: Size = shown.parse().map_err(TestCaseError::fail)?;
            let tolerance = (n as f64 * 0.06).max(1.0);
            prop_assert!((back.0 as f64 - n as f64).abs() <= tolerance, "{n} -> {shown} -> {}", back.0);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<Duration>();
            let _ = s.parse::<Size>();
            let _ = s.parse::<Percent>();
        }
    }
}
