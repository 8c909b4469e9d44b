//! Durations in the configuration and on the command line: `"500ms"`,
//! `"30s"`, `"1h 30m"` (humantime's units), or an integer, which is
//! milliseconds, as the settings' old `*_ms` keys were (they are still
//! read: `heartbeat_ms = 500` is `heartbeat = "500ms"`).

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Reads a duration: a string with units or an integer of milliseconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write it as \"500ms\", \"30s\" or \"1h 30m\"")
    })
}

/// `duration` as the configuration writes it (`500ms`, `1m 30s`).
pub fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Deserializes a setting with [`parse`]'s rules.
pub fn setting<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Setting;

    impl Visitor<'_> for Setting {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"500ms\" or \"30s\", or an integer of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("{ms} ms: a duration cannot be negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(Setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct One {
        #[serde(alias = "after_ms", deserialize_with = "setting")]
        after: Duration,
    }

    fn read(text: &str) -> Result<Duration, String> {
        toml::from_str::<One>(text)
            .map(|o| o.after)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn units_integers_and_the_old_key_read_the_same() {
        assert_eq!(read(r#"after = "500ms""#), Ok(Duration::from_millis(500)));
        assert_eq!(read(r#"after = "1m 30s""#), Ok(Duration::from_secs(90)));
        assert_eq!(read("after = 500"), Ok(Duration::from_millis(500)));
        assert_eq!(read("after_ms = 500"), Ok(Duration::from_millis(500)));
        assert_eq!(read(r#"after_ms = "2s""#), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn a_bad_duration_says_how_to_write_one() {
        let e = read(r#"after = "soon""#).expect_err("not a duration");
        assert!(
            e.contains("\"soon\" is not a duration") && e.contains("\"500ms\""),
            "{e}"
        );
        let e = read("after = -5").expect_err("negative");
        assert!(e.contains("cannot be negative"), "{e}");
        let e = read("after = 1.5").expect_err("a float");
        assert!(e.contains("an integer of milliseconds"), "{e}");
        let both = read("after = \"1s\"\nafter_ms = 1000").expect_err("twice");
        assert!(both.contains("duplicate field"), "{both}");
    }

    #[test]
    fn shown_as_written() {
        assert_eq!(show(Duration::from_millis(500)), "500ms");
        assert_eq!(
            parse(&show(Duration::from_secs(90))),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(parse("250"), Ok(Duration::from_millis(250)));
    }
}
