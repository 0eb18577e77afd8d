//! Retention definitions (`60:1440`, `1m:30d`, `10s:1d,1m:30d`) parsed and validated like whisper.py.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One archive's resolution and length: `seconds_per_point` × `points` seconds of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Retention {
    /// Seconds covered by one point (the archive's step).
    pub seconds_per_point: u32,
    /// Number of points kept.
    pub points: u32,
}

impl Retention {
    /// A retention of `points` points of `seconds_per_point` seconds.
    pub fn new(seconds_per_point: u32, points: u32) -> Self {
        Retention { seconds_per_point, points }
    }

    /// Seconds of history kept (`spp × points`).
    pub fn retention(&self) -> u64 {
        u64::from(self.seconds_per_point) * u64::from(self.points)
    }

    /// Parses one definition exactly like whisper's `parseRetentionDef`: `PRECISION:POINTS` where each side
    /// is digits or digits+unit (`s`, `m`/`min`, `h`, `d`, `w`, `y` — any prefix of seconds, minutes, hours,
    /// days, weeks, years; `y` = 365 days). A duration on the right is divided by the precision, rounding down.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidRetention { spec: spec.to_owned(), reason: reason.to_owned() };
        let (precision, points) = spec.trim().split_once(':').ok_or_else(|| bad("missing ':'"))?;
        let precision = parse_duration(precision).map_err(|r| bad(&r))?;
        let points = if is_digits(points) {
            parse_number(points).map_err(|r| bad(&r))?
        } else {
            let duration = parse_duration(points).map_err(|r| bad(&r))?;
            if precision == 0 {
                return Err(bad("precision must be at least 1 second"));
            }
            duration / precision
        };
        // whisper parses these and fails later (struct.error in create); refuse them here.
        let too_large = |what: &str| {
            Error::Refused(format!("retention '{spec}': {what} does not fit in a whisper header (32 bits)"))
        };
        let seconds_per_point = u32::try_from(precision).map_err(|_| too_large("the precision"))?;
        let points = u32::try_from(points).map_err(|_| too_large("the point count"))?;
        Ok(Retention { seconds_per_point, points })
    }

    /// Parses a precision alone (`60`, `1m`), as `fetch`'s archive selector does (`spec + ":1"`).
    pub fn parse_precision(spec: &str) -> Result<u32> {
        Ok(Retention::parse(&format!("{spec}:1"))?.seconds_per_point)
    }

    /// Parses a comma- or whitespace-separated list (`10s:1d,1m:30d`).
    pub fn parse_list(spec: &str) -> Result<Vec<Self>> {
        spec.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(Retention::parse).collect()
    }
}

impl FromStr for Retention {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Retention::parse(s)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seconds_per_point, self.points)
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_number(s: &str) -> std::result::Result<u64, String> {
    s.parse::<u64>().map_err(|_| format!("'{s}' is too large"))
}

/// `123` (seconds) or `123unit`.
fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    if is_digits(s) {
        return parse_number(s);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() || unit.is_empty() || !unit.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!("invalid specification '{s}'"));
    }
    let multiplier = unit_seconds(unit).ok_or_else(|| format!("invalid unit '{unit}'"))?;
    parse_number(digits)?.checked_mul(multiplier).ok_or_else(|| format!("'{s}' is too large"))
}

/// The first of whisper's unit names that starts with `unit`.
fn unit_seconds(unit: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 6] = [
        ("seconds", 1),
        ("minutes", 60),
        ("hours", 3600),
        ("days", 86400),
        ("weeks", 86400 * 7),
        ("years", 86400 * 365),
    ];
    UNITS.iter().find(|(name, _)| name.starts_with(unit)).map(|&(_, s)| s)
}

/// Sorts `archives` by precision and checks them exactly as whisper's `validateArchiveList`, plus the
/// checks the reference forgets (zero precision or points, sizes that overflow the 32-bit header).
pub fn validate_archive_list(archives: &mut [Retention]) -> Result<()> {
    if archives.is_empty() {
        return Err(Error::InvalidConfiguration("You must specify at least one archive configuration!".into()));
    }
    archives.sort_by_key(|r| r.seconds_per_point);
    for (i, pair) in archives.windows(2).enumerate() {
        let (a, b) = (pair[0], pair[1]);
        if a.seconds_per_point >= b.seconds_per_point {
            return Err(Error::InvalidConfiguration(format!(
                "A Whisper database may not be configured having two archives with the same precision \
                 (archive{i}: {a}, archive{}: {b})",
                i + 1
            )));
        }
        if a.seconds_per_point == 0 || b.seconds_per_point % a.seconds_per_point != 0 {
            return Err(Error::InvalidConfiguration(format!(
                "Higher precision archives' precision must evenly divide all lower precision archives' \
                 precision (archive{i}: {}, archive{}: {})",
                a.seconds_per_point,
                i + 1,
                b.seconds_per_point
            )));
        }
        if b.retention() <= a.retention() {
            return Err(Error::InvalidConfiguration(format!(
                "Lower precision archives must cover larger time intervals than higher precision archives \
                 (archive{i}: {} seconds, archive{}: {} seconds)",
                a.retention(),
                i + 1,
                b.retention()
            )));
        }
        let per_consolidation = b.seconds_per_point / a.seconds_per_point;
        if a.points < per_consolidation {
            return Err(Error::InvalidConfiguration(format!(
                "Each archive must have at least enough points to consolidate to the next archive \
                 (archive{} consolidates {per_consolidation} of archive{i}'s points but it has only {} total points)",
                i + 1,
                a.points
            )));
        }
    }
    // Beyond the reference: it accepts these and writes a file nothing can use.
    for r in archives.iter() {
        if r.seconds_per_point == 0 || r.points == 0 {
            return Err(Error::Refused(format!(
                "archive {r} would hold no data: seconds per point and points must both be at least 1"
            )));
        }
        if u32::try_from(r.retention()).is_err() {
            return Err(Error::Refused(format!(
                "archive {r} covers {} seconds, more than a whisper header can record",
                r.retention()
            )));
        }
    }
    let total: u64 = archives.iter().map(|r| u64::from(r.points) * 12).sum::<u64>() + 16 + 12 * archives.len() as u64;
    if u32::try_from(total).is_err() {
        return Err(Error::Refused(format!(
            "the file would be {total} bytes, beyond the 4 GiB that whisper's 32-bit offsets can address"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_parse_retention_def() {
        let r = |s: &str| Retention::parse(s).map(|r| (r.seconds_per_point, r.points));
        assert_eq!(r("60:1440").unwrap(), (60, 1440));
        assert_eq!(r("1m:30d").unwrap(), (60, 43200));
        assert_eq!(r(" 10s:1d ").unwrap(), (10, 8640));
        assert_eq!(r("1min:1h").unwrap(), (60, 60));
        assert_eq!(r("1m:30s").unwrap(), (60, 0));
        assert_eq!(r("7s:1m").unwrap(), (7, 8));
        assert_eq!(r("5m:1y").unwrap(), (300, 105120));
        assert!(r("1mo:1d").is_err());
        assert!(r("1M:1d").is_err());
        assert!(r("60").is_err());
        assert!(r("60:").is_err());
        assert!(r("x:1").is_err());
        assert!(r("0:1h").is_err());
        assert_eq!(Retention::parse_list("10s:1d,1m:30d").unwrap().len(), 2);
        assert_eq!(Retention::parse_precision("5m").unwrap(), 300);
    }

    #[test]
    fn validates_like_validate_archive_list() {
        let v = |s: &str| validate_archive_list(&mut Retention::parse_list(s).unwrap());
        assert!(v("60:100,300:30").is_ok());
        assert!(v("300:30,60:100").is_ok());
        assert!(v("60:10,60:20").is_err());
        assert!(v("60:10,90:20").is_err());
        assert!(v("60:100,300:20").is_err());
        assert!(v("60:4,300:100").is_err());
        assert!(v("").is_err());
        assert!(v("60:0").is_err());
    }
}
