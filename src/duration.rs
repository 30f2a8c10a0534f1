//! Human durations in manifests (`"90s"`, `"5m"`, `"1h30m"`): parsed once into
//! [`std::time::Duration`] so the rest of the code never sees strings.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration: {why} (write it like \"90s\", \"5m\", \"2h\" or \"1h30m\")")]
pub struct DurationError {
    pub input: String,
    pub why: &'static str,
}

/// The longest duration a manifest may give: 100 years (36525 days). Anything longer would
/// overflow the timestamps it is added to (DESIGN §3), so every parsed duration is at most this.
pub const MAX_DURATION: Duration = Duration::from_secs(36_525 * 86_400);

/// [`DurationError::why`] for a duration over [`MAX_DURATION`].
pub const TOO_LONG: &str = "it is over 100 years, longer than a timestamp can hold";

/// `t + d`, or [`jiff::Timestamp::MAX`] when that is past what a timestamp can hold: for
/// deadlines (`bake`, `promotion_soak`), where "never" is the right reading of an overflow.
pub fn saturating_add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// Parses a sequence of `<number><unit>` with units `d`, `h`, `m`, `s` and `ms`, largest first,
/// up to [`MAX_DURATION`].
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_owned(),
        why,
    };
    if input.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = input;
    let mut last_unit_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("the number is too large"))?;
        rest = &rest[digits..];
        let (unit, rank, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 0, 2)
        } else {
            match rest.bytes().next() {
                Some(b's') => (Duration::from_secs(1), 1, 1),
                Some(b'm') => (Duration::from_secs(60), 2, 1),
                Some(b'h') => (Duration::from_secs(3600), 3, 1),
                Some(b'd') => (Duration::from_secs(86_400), 4, 1),
                Some(_) => return Err(err("unknown unit (use d, h, m, s or ms)")),
                None => return Err(err("a unit is missing after the number")),
            }
        };
        if rank >= last_unit_rank {
            return Err(err("units must go from largest to smallest, each once"));
        }
        last_unit_rank = rank;
        rest = &rest[len..];
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| err(TOO_LONG))?;
        total = total.checked_add(part).ok_or_else(|| err(TOO_LONG))?;
    }
    if total > MAX_DURATION {
        return Err(err(TOO_LONG));
    }
    Ok(total)
}

/// Formats a duration the way manifests write it, so `show` prints what a user would type.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 && millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")] {
        if secs >= unit {
            out.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_design_examples() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1m1h",
            "1h1h",
            "-5s",
            "1.5h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_stop_at_one_hundred_years() {
        assert_eq!(parse_duration("36525d"), Ok(MAX_DURATION));
        for long in [
            "36525d1ms",
            "36526d",
            "876601h",
            "4294967295d",
            "18446744073709551615s",
        ] {
            assert_eq!(parse_duration(long).map_err(|e| e.why), Err(TOO_LONG), "{long}");
        }
    }

    #[test]
    fn saturating_add_never_panics() {
        let t: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(
            saturating_add(t, Duration::from_secs(60)),
            "2026-11-23T10:01:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(saturating_add(t, Duration::MAX), jiff::Timestamp::MAX);
        assert_eq!(
            saturating_add(jiff::Timestamp::MAX, Duration::from_secs(1)),
            jiff::Timestamp::MAX
        );
        assert_eq!(
            saturating_add(jiff::Timestamp::MIN, MAX_DURATION),
            jiff::Timestamp::MIN
                .checked_add(jiff::SignedDuration::try_from(MAX_DURATION).unwrap())
                .unwrap()
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["0s", "90s", "1h30m", "2d3h", "1s500ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
