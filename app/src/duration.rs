//! Go's duration syntax (`250ms`, `1.5s`, `2h45m`): parsing, and printing the way Go's `Duration.String` does.
//!
//! Upstream flags, config files and the `/stats` JSON all speak this syntax, so
//! scripts written against upstream keep working only if we read and print it
//! exactly alike.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Go's unit table. Both spellings of micro (U+00B5 and U+03BC) are accepted,
/// as Go does, since either can come out of a config file editor.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
];

/// Go's `time.Duration` is an `int64` of nanoseconds; values beyond it are an
/// overflow error there, and rejecting them here keeps `as_nanos_i64` lossless.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a Go duration did not parse; each names the text it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
    #[error("duration {0:?} is too large")]
    TooLarge(String),
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
}

/// Parses a Go duration such as `250ms`, `1.5s`, `2h45m` or `1h2m3.5s`.
///
/// Every number needs a unit except a bare `0`. Negative durations are an
/// error: no NSQ setting has a meaningful negative value, and rejecting them at
/// the edge spares every caller a sign check.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(s.to_owned());
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }

    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(tail) => tail.split_at(tail.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(s.to_owned()));
        }
        let Some(&(_, per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_owned(),
                input: s.to_owned(),
            });
        };

        let overflow = || DurationError::TooLarge(s.to_owned());
        // Anything longer than this overflows i64 nanoseconds whatever the unit.
        if int_digits.len() > 20 {
            return Err(overflow());
        }
        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| invalid())?
        };
        total = whole
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(total))
            .ok_or_else(overflow)?;
        if !frac_digits.is_empty() {
            // Digits past the 20th are worth far less than a nanosecond even in
            // hours, so dropping them cannot change the truncated result.
            let kept = &frac_digits[..frac_digits.len().min(20)];
            let numerator: u128 = kept.parse().map_err(|_| invalid())?;
            total += numerator * per_unit / 10u128.pow(kept.len() as u32);
        }
        if total > MAX_NANOS {
            return Err(overflow());
        }
        rest = after;
    }

    if negative && total != 0 {
        return Err(DurationError::Negative(s.to_owned()));
    }
    // total <= i64::MAX, so it fits in u64.
    Ok(Duration::from_nanos(total as u64))
}

/// A [`Duration`] that reads and prints Go syntax; use it as a clap value type:
/// `#[arg(long, default_value = "60s")] msg_timeout: GoDuration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// Nanoseconds as Go's `int64` representation, as sent on the wire and in
    /// `/stats` (e.g. IDENTIFY's `msg_timeout` reply). Saturates, although
    /// parsed values never need to.
    pub fn as_nanos_i64(&self) -> i64 {
        i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(GoDuration)
    }
}

impl Deref for GoDuration {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// Splits `v` into whole units of `10^prec` and the remainder rendered as a
/// decimal fraction without trailing zeros (empty when the remainder is zero),
/// which is how Go prints `1.5s` rather than `1.500000000s`.
fn split_fraction(v: u128, prec: u32) -> (u128, String) {
    let scale = 10u128.pow(prec);
    let (whole, frac) = (v / scale, v % scale);
    if frac == 0 {
        return (whole, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (whole, format!(".{}", digits.trim_end_matches('0')))
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String`: sub-second values in the largest unit that
    /// keeps them at least 1 (`250ms`, `1.5µs`), otherwise `[Nh][Nm]N[.F]s`,
    /// where minutes always appear once hours do (`1h0m0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < NANOS_PER_SEC {
            let (unit, prec) = match nanos {
                n if n < 1_000 => ("ns", 0),
                n if n < 1_000_000 => ("\u{b5}s", 3),
                _ => ("ms", 6),
            };
            let (whole, frac) = split_fraction(nanos, prec);
            return write!(f, "{whole}{frac}{unit}");
        }
        let (secs, frac) = split_fraction(nanos, 9);
        let minutes = secs / 60;
        if minutes > 0 {
            let hours = minutes / 60;
            if hours > 0 {
                write!(f, "{hours}h")?;
            }
            write!(f, "{}m", minutes % 60)?;
        }
        write!(f, "{}{frac}s", secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(s: &str) -> u128 {
        parse_go_duration(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_nanos()
    }

    #[test]
    fn parses_go_syntax() {
        let table: &[(&str, u128)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("1ns", 1),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("250ms", 250_000_000),
            ("2s", 2_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("+5s", 5_000_000_000),
            ("1m", 60_000_000_000),
            ("15m", 900_000_000_000),
            ("1h", 3_600_000_000_000),
            ("2h45m", (2 * 3600 + 45 * 60) * NANOS_PER_SEC),
            ("1h2m3.5s", (3600 + 120 + 3) * NANOS_PER_SEC + 500_000_000),
            ("1.5h", 5_400_000_000_000),
            ("0.000000001s", 1),
            ("0.0000000019s", 1),
            ("1s500ms", 1_500_000_000),
            ("2562047h47m16.854775807s", MAX_NANOS),
        ];
        for (input, want) in table {
            assert_eq!(nanos(input), *want, "{input}");
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for bad in [
            "",
            "5",
            "1.5",
            "-1s",
            "-0.5ms",
            "1x",
            "1sm",
            "s",
            ".s",
            ".",
            "1s-2s",
            "1 s",
            " 1s",
            "++1s",
            "2562047h47m16.854775808s",
            "99999999999999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_go_duration("5")
            .unwrap_err()
            .to_string()
            .contains("missing unit"));
        assert!(parse_go_duration("1x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(parse_go_duration("-1s")
            .unwrap_err()
            .to_string()
            .contains("negative"));
    }

    #[test]
    fn prints_like_go() {
        let table: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1\u{b5}s"),
            (1_500, "1.5\u{b5}s"),
            (250_000_000, "250ms"),
            (25_000_000, "25ms"),
            (1_234_567, "1.234567ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (2_000_000_000, "2s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (900_000_000_000, "15m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_661_000_000_001, "1h1m1.000000001s"),
            (i64::MAX as u64, "2562047h47m16.854775807s"),
        ];
        for (n, want) in table {
            assert_eq!(GoDuration(Duration::from_nanos(*n)).to_string(), *want);
        }
    }

    #[test]
    fn round_trips_through_display() {
        for s in [
            "1m0s",
            "250ms",
            "2s",
            "1h0m0s",
            "0s",
            "1.5s",
            "2h45m0s",
            "1.5\u{b5}s",
        ] {
            let d: GoDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }

    #[test]
    fn newtype_conveniences() {
        let d: GoDuration = "1.5s".parse().unwrap();
        assert_eq!(d.as_nanos_i64(), 1_500_000_000);
        assert_eq!(d.as_millis(), 1_500, "Deref reaches Duration's methods");
        assert_eq!(Duration::from(d), Duration::from_millis(1_500));
        assert_eq!(GoDuration::default().to_string(), "0s");
        assert_eq!(GoDuration(Duration::MAX).as_nanos_i64(), i64::MAX);
    }

    #[test]
    fn works_as_a_clap_value_type() {
        use clap::Parser;
        #[derive(Parser)]
        struct Opts {
            #[arg(long, default_value = "60s")]
            msg_timeout: GoDuration,
        }
        let o = Opts::try_parse_from(["t"]).unwrap();
        assert_eq!(o.msg_timeout.to_string(), "1m0s");
        let o = Opts::try_parse_from(["t", "--msg-timeout=250ms"]).unwrap();
        assert_eq!(*o.msg_timeout, Duration::from_millis(250));
        assert!(Opts::try_parse_from(["t", "--msg-timeout=5"]).is_err());
    }
}
