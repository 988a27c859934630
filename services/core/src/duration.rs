//! The one duration syntax of Setpoint's flags (server, reconciler and `setpointctl`):
//! a whole number and a unit, as Kubernetes writes them (`250ms`, `10s`, `5m`, `1h`).

use std::time::Duration;

/// Parses `250ms`, `10s`, `5m` or `1h`; the error names the problem.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |problem: &str| {
        format!("`{text}`: expected a duration such as 500ms, 10s, 5m or 1h ({problem})")
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid("no unit"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| invalid("no whole number before the unit"))?;
    let milliseconds = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid(&format!("`{unit}` is not ms, s, m or h"))),
    };
    number
        .checked_mul(milliseconds)
        .map(Duration::from_millis)
        .ok_or_else(|| invalid("too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn durations_without_a_number_or_a_known_unit_are_rejected() {
        for (text, problem) in [
            ("10", "no unit"),
            ("s", "no whole number"),
            ("", "no unit"),
            ("10d", "`d` is not ms, s, m or h"),
            ("soon", "no whole number"),
            ("18446744073709551615h", "too long"),
            ("99999999999999999999h", "no whole number"),
        ] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains("expected a duration"), "{text}: {error}");
            assert!(error.contains(problem), "{text}: {error}");
        }
    }
}
