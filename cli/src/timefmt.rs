//! Durations (`90d`) and instants (`now`, `2025-01-31`, `2025-01-31T12:00:00Z`,
//! Unix milliseconds), converted without a date library.

const MS_PER_DAY: u64 = 86_400_000;

/// Parses `<n>d`, `<n>h`, `<n>m` or `<n>s` into milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid duration {s:?}: use a number and a unit, like 90d, 12h, 30m or 45s");
    let unit_ms = match s.chars().last() {
        Some('d') => MS_PER_DAY,
        Some('h') => 3_600_000,
        Some('m') => 60_000,
        Some('s') => 1_000,
        _ => return Err(bad()),
    };
    let digits = s.get(..s.len() - 1).ok_or_else(bad)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!(
            "invalid duration {s:?}: it must be longer than zero"
        ));
    }
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("invalid duration {s:?}: too long"))
}

/// Parses `now`, Unix milliseconds, `YYYY-MM-DD` (midnight UTC) or
/// `YYYY-MM-DDTHH:MM[:SS]Z`.
pub fn parse_instant(s: &str, now_ms: u64) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid time {s:?}: use `now`, a date like 2025-01-31, \
             a UTC time like 2025-01-31T12:00:00Z, or Unix milliseconds"
        )
    };
    if s == "now" {
        return Ok(now_ms);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |p: &str, len: usize| -> Result<u64, String> {
        if p.len() != len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(da), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y, 4)?, num(mo, 2)?, num(da, 2)?);
    if y < 1970 || !(1..=12).contains(&mo) || da < 1 || da > days_in_month(y, mo) {
        return Err(bad());
    }
    let mut secs = 0;
    if let Some(t) = time {
        let mut parts = t.split(':');
        let h = num(parts.next().unwrap_or(""), 2)?;
        let mi = num(parts.next().unwrap_or(""), 2)?;
        let se = match parts.next() {
            Some(p) => num(p, 2)?,
            None => 0,
        };
        if parts.next().is_some() || h > 23 || mi > 59 || se > 59 {
            return Err(bad());
        }
        secs = h * 3600 + mi * 60 + se;
    }
    Ok(days_from_civil(y, mo, da) * MS_PER_DAY + secs * 1000)
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date on or after it.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let mut days = 0;
    for year in 1970..y {
        days += if is_leap(year) { 366 } else { 365 };
    }
    for month in 1..m {
        days += days_in_month(y, month);
    }
    days + d - 1
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ`; far-future values
/// (past year 9999) as `never`.
pub fn format_instant(ms: u64) -> String {
    let mut days = ms / MS_PER_DAY;
    let secs = (ms % MS_PER_DAY) / 1000;
    let mut y = 1970;
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        y += 1;
        if y > 9999 {
            return "never".to_owned();
        }
    }
    let mut m = 1;
    while days >= days_in_month(y, m) {
        days -= days_in_month(y, m);
        m += 1;
    }
    format!(
        "{y:04}-{m:02}-{:02}T{:02}:{:02}:{:02}Z",
        days + 1,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(90 * MS_PER_DAY));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration("30m"), Ok(30 * 60_000));
        for bad in ["", "d", "0d", "1y", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("now", 5), Ok(5));
        assert_eq!(parse_instant("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_instant("1970-01-01", 0), Ok(0));
        let t = parse_instant("2024-02-29T13:14:15Z", 0).unwrap();
        assert_eq!(t, 1_709_212_455_000);
        assert_eq!(format_instant(t), "2024-02-29T13:14:15Z");
        assert_eq!(parse_instant("2024-02-29T13:14Z", 0), Ok(1_709_212_440_000));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "2024-01-01T25:00Z",
            "yesterday",
        ] {
            assert!(parse_instant(bad, 0).is_err(), "{bad}");
        }
        assert_eq!(format_instant(u64::MAX), "never");
    }
}
