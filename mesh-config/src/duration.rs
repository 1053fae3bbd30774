//! Istio durations: protobuf `Duration` in its JSON form, a decimal number of seconds with an
//! `s` suffix (`"7s"`, `"0.5s"`), and the Go-style units Istio's validation also accepts
//! (`"100ms"`, `"1m"`, `"1h30m"`, `"250us"`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as Istio writes it; serializes back to `"<seconds>s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IstioDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"7s\", \"0.5s\", \"100ms\")")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl IstioDuration {
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.starts_with('-') {
            return Err(err("negative"));
        }
        let mut rest = s;
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit"))?;
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let number: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                "ns" => 1e-9,
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            let secs = number * scale;
            if !secs.is_finite() || secs > 1e12 {
                return Err(err("too large"));
            }
            total += Duration::from_secs_f64(secs);
        }
        Ok(IstioDuration(total))
    }
}

impl fmt::Display for IstioDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else {
            let s = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
            write!(f, "{}s", s.trim_end_matches('0'))
        }
    }
}

impl Serialize for IstioDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IstioDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What [`IstioDuration::parse`] accepts, as a regular expression (RE2 and ECMA 262 alike, so
/// the API server and the tests' validator read it the same): one or more number-unit pairs,
/// blanks around. Only the 10^12 s ceiling is left to the parser.
pub const DURATION_PATTERN: &str = r"^\s*(([0-9]+\.?[0-9]*|\.[0-9]+)(h|ms|m|s|us|µs|ns))+\s*$";

/// A string (the derive would see a struct around a `Duration`): the schema has to describe
/// what the custom `Deserialize` reads, or a CRD built from it would refuse `"5s"`.
impl JsonSchema for IstioDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "IstioDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(
            IstioDuration::parse("7s").ok(),
            Some(IstioDuration(Duration::from_secs(7)))
        );
        assert_eq!(
            IstioDuration::parse("0.5s").ok(),
            Some(IstioDuration(Duration::from_millis(500)))
        );
        assert_eq!(
            IstioDuration::parse("100ms").ok(),
            Some(IstioDuration(Duration::from_millis(100)))
        );
        assert_eq!(
            IstioDuration::parse("1h30m").ok(),
            Some(IstioDuration(Duration::from_secs(5400)))
        );
        assert_eq!(
            IstioDuration(Duration::from_millis(500)).to_string(),
            "0.5s"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "7", "s", "7x", "-1s", "1.2.3s"] {
            assert!(IstioDuration::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
