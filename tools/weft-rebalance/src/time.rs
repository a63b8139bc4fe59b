//! Times and durations as people write them: `24h`, `90m`, `30s`, `1d`;
//! `2026-12-07T09:00:00Z` or seconds since the Unix epoch. No time-zone
//! database: UTC only.

use std::time::Duration;

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn utc(secs: f64) -> String {
    let s = secs.floor() as i64;
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let t = s.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Seconds since the epoch of `now`, a number of seconds, or
/// `YYYY-MM-DDTHH:MM[:SS]Z`.
pub fn parse_time(text: &str) -> Result<f64, String> {
    let bad = || format!("{text}: expected now, seconds since 1970, or YYYY-MM-DDTHH:MM:SSZ");
    if text == "now" {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()));
    }
    if let Ok(s) = text.parse::<f64>() {
        return if s.is_finite() && s >= 0.0 {
            Ok(s)
        } else {
            Err(bad())
        };
    }
    let t = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = t.split_once('T').ok_or_else(bad)?;
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<u32>().ok()).ok_or_else(bad);
    let mut dp = date.split('-');
    let (y, m, d) = (num(dp.next())?, num(dp.next())?, num(dp.next())?);
    let mut cp = clock.split(':');
    let (hh, mm) = (num(cp.next())?, num(cp.next())?);
    let ss = cp.next().map_or(Ok(0), |s| num(Some(s)))?;
    if dp.next().is_some()
        || cp.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(y), m, d);
    Ok((days * 86_400 + i64::from(hh * 3600 + mm * 60 + ss)) as f64)
}

/// `24h`, `90m`, `30s`, `500ms`, `1d`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text}: expected a duration such as 24h, 90m, 30s or 1d");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let unit = match &rest[digits..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(n * unit).map_err(|_| bad())?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_634_000.0), "2026-12-07T09:00:00Z");
        assert_eq!(parse_time("2026-12-07T09:00:00Z"), Ok(1_796_634_000.0));
        assert_eq!(parse_time("2024-02-29T23:59Z"), Ok(1_709_251_140.0));
        assert_eq!(utc(1_709_251_140.0), "2024-02-29T23:59:00Z");
        assert_eq!(parse_time("12.5"), Ok(12.5));
        for bad in ["2026-13-01T00:00Z", "yesterday", "2026-12-07 09:00Z", "-5"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_as_written() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        for bad in ["", "h", "5", "5x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
