//! Values JSON has no type for: timestamps, dates and decimals, and their text forms.
//!
//! Each is what Arrow and Parquet store: a [`Timestamp`] is a count of [`TimeUnit`]s since
//! 1970-01-01T00:00:00 with an optional zone, a date a count of days since 1970-01-01
//! ([`Value::Date`](crate::Value::Date)), a [`Decimal`] an integer with a precision and a
//! scale. Their text forms (JSONL, CSV, display, error messages) are RFC 3339 timestamps
//! (`2024-05-01T12:30:00.250Z`, in UTC with `Z` when the timestamp has a zone, without a
//! zone when it has none; as many fraction digits as the unit has), ISO 8601 dates
//! (`2024-05-01`) and decimal digits with the scale's places (`12.50`).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// The unit a [`Timestamp`] counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimeUnit {
    /// Seconds.
    Second,
    /// Milliseconds.
    Millisecond,
    /// Microseconds.
    Microsecond,
    /// Nanoseconds.
    Nanosecond,
}

impl TimeUnit {
    /// The names the units are written as in a pipeline file.
    pub const NAMES: [&'static str; 4] = ["s", "ms", "us", "ns"];

    /// The unit named `s` (one of [`TimeUnit::NAMES`]).
    pub fn parse(s: &str) -> Option<TimeUnit> {
        Some(match s {
            "s" => TimeUnit::Second,
            "ms" => TimeUnit::Millisecond,
            "us" => TimeUnit::Microsecond,
            "ns" => TimeUnit::Nanosecond,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Second => "s",
            TimeUnit::Millisecond => "ms",
            TimeUnit::Microsecond => "us",
            TimeUnit::Nanosecond => "ns",
        }
    }

    /// How many of it make a second.
    pub fn per_second(self) -> i64 {
        match self {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        }
    }

    /// The digits of a second's fraction it counts.
    fn digits(self) -> usize {
        match self {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond => 6,
            TimeUnit::Nanosecond => 9,
        }
    }
}

/// A point in time: `value` [`TimeUnit`]s since 1970-01-01T00:00:00.
///
/// With a zone (an IANA name such as `Europe/Paris`, or an offset such as `+02:00`, as
/// Arrow keeps it), the count is of UTC time and the zone says how to show it; without
/// one, it is a wall-clock time in no zone. Two timestamps are equal when their value, unit
/// and zone are: the same instant in milliseconds and in seconds are two values, as they
/// are two Parquet types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    value: i64,
    unit: TimeUnit,
    // An `Arc<String>` (one pointer) rather than an `Arc<str>` (two), so that a `Value`
    // stays 32 bytes; a column's values share one zone.
    zone: Option<Arc<String>>,
}

impl Timestamp {
    /// A timestamp of `value` units since the epoch, in `zone` if any.
    pub fn new(value: i64, unit: TimeUnit, zone: Option<Arc<String>>) -> Self {
        Timestamp { value, unit, zone }
    }

    /// The count of units since the epoch.
    pub fn value(&self) -> i64 {
        self.value
    }

    /// The unit.
    pub fn unit(&self) -> TimeUnit {
        self.unit
    }

    /// The zone, if it has one.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref().map(String::as_str)
    }

    /// The zone, shared.
    pub fn zone_arc(&self) -> Option<&Arc<String>> {
        self.zone.as_ref()
    }

    /// The date and time it counts to (UTC when it has a zone), or `None` past chrono's
    /// range (about ±262,000 years).
    pub fn to_naive(&self) -> Option<NaiveDateTime> {
        let per = self.unit.per_second();
        let secs = self.value.div_euclid(per);
        let nanos = self.value.rem_euclid(per) * (1_000_000_000 / per);
        DateTime::from_timestamp(secs, u32::try_from(nanos).ok()?).map(|d| d.naive_utc())
    }

    /// The timestamp of a date and time (UTC when `zone` is given) in `unit`, or `None`
    /// when the count does not fit an `i64` (nanoseconds reach only the years 1677 to
    /// 2262) or the time has a fraction finer than the unit.
    pub fn from_naive(dt: NaiveDateTime, unit: TimeUnit, zone: Option<Arc<String>>) -> Option<Self> {
        let utc = dt.and_utc();
        let per = unit.per_second();
        let nanos = i64::from(utc.timestamp_subsec_nanos());
        let step = 1_000_000_000 / per;
        if nanos % step != 0 {
            return None;
        }
        let value = utc.timestamp().checked_mul(per)?.checked_add(nanos / step)?;
        Some(Timestamp { value, unit, zone })
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339: `2024-05-01T12:30:00.250Z` (UTC, for a timestamp with a zone), or without
    /// the `Z` for one without; the fraction has the unit's digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(dt) = self.to_naive() else {
            // Past chrono's range: the count itself, which is what the value is.
            return write!(f, "{}{} since 1970-01-01", self.value, self.unit.name());
        };
        write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%S"))?;
        let digits = self.unit.digits();
        if digits > 0 {
            let frac = self.value.rem_euclid(self.unit.per_second());
            write!(f, ".{frac:0digits$}")?;
        }
        if self.zone.is_some() {
            f.write_str("Z")?;
        }
        Ok(())
    }
}

/// The number of days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The date `days` after 1970-01-01, or `None` past chrono's range.
pub fn date_of_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(EPOCH_DAYS_FROM_CE)?)
}

/// The days from 1970-01-01 to `date`.
pub fn days_of_date(date: NaiveDate) -> i32 {
    use chrono::Datelike;
    date.num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

/// A date's text: ISO 8601 (`2024-05-01`).
pub(crate) fn write_date(days: i32, f: &mut dyn fmt::Write) -> fmt::Result {
    match date_of_days(days) {
        Some(d) => write!(f, "{}", d.format("%Y-%m-%d")),
        None => write!(f, "{days} days since 1970-01-01"),
    }
}

/// The most digits a [`Decimal`] holds: what an `i128` holds whole (Arrow's `Decimal128`).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// A decimal number: an integer `value` and a `scale`, meaning `value × 10^-scale`, with
/// at most `precision` digits (Arrow's and Parquet's decimal).
///
/// The integer is kept as 16 little-endian bytes rather than an `i128`, whose 16-byte
/// alignment would make every `Value` 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    value: [u8; 16],
    precision: u8,
    scale: i8,
}

impl Decimal {
    /// A decimal of `value × 10^-scale` with `precision` digits, or why not: the
    /// precision must be 1 to 38 and the value must have at most that many digits.
    pub fn new(value: i128, precision: u8, scale: i8) -> Result<Self, String> {
        if precision == 0 || precision > MAX_DECIMAL_PRECISION {
            return Err(format!("a decimal's precision must be 1 to {MAX_DECIMAL_PRECISION}, not {precision}"));
        }
        if value.unsigned_abs() >= 10u128.pow(u32::from(precision)) {
            return Err(format!("{value} has more than {precision} digits"));
        }
        Ok(Decimal { value: value.to_le_bytes(), precision, scale })
    }

    /// The integer (the value times `10^scale`).
    pub fn value(&self) -> i128 {
        i128::from_le_bytes(self.value)
    }

    /// The most digits it may have.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// The digits after the point (negative: zeros before it).
    pub fn scale(&self) -> i8 {
        self.scale
    }

    /// The nearest float.
    pub fn to_f64(&self) -> f64 {
        self.value() as f64 / 10f64.powi(i32::from(self.scale))
    }

    /// Decimal text (`-12.50`, `1e3`, `.5`: the digits, a point and a sign, or a float's
    /// exponent form) as a decimal of this precision and scale, exactly, or why not: a
    /// value with more places than the scale, or more digits than the precision.
    pub fn parse(text: &str, precision: u8, scale: i8) -> Result<Decimal, String> {
        let t = text.trim();
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => {
                let e: i32 = body[at + 1..].parse().map_err(|_| format!("{text:?} is not a decimal number"))?;
                (&body[..at], e)
            }
            None => (body, 0),
        };
        let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
            return Err(format!("{text:?} is not a decimal number"));
        }
        // The digits as an integer, and the power of ten that scales it.
        let digits = format!("{whole}{frac}");
        let digits = digits.trim_start_matches('0');
        let mut places = i32::try_from(frac.len()).map_err(|_| "too many digits".to_owned())? - exponent;
        let mut n: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| format!("{text:?} has more than {precision} digits"))?
        };
        let target = i32::from(scale);
        // Trailing zeros past the scale carry no value: drop them.
        while places > target && n % 10 == 0 && n != 0 {
            n /= 10;
            places -= 1;
        }
        if n == 0 {
            places = target;
        }
        if places > target {
            return Err(format!("{text:?} has more than {scale} decimal places"));
        }
        while places < target {
            n = n.checked_mul(10).ok_or_else(|| format!("{text:?} has more than {precision} digits"))?;
            places += 1;
        }
        let n = if negative { -n } else { n };
        Decimal::new(n, precision, scale).map_err(|_| format!("{text:?} has more than {precision} digits"))
    }
}

impl fmt::Display for Decimal {
    /// Its digits with `scale` places after the point (`12.50`, `-0.05`), or zeros after
    /// them for a negative scale (`1200`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value();
        let digits = v.unsigned_abs().to_string();
        if v < 0 {
            f.write_str("-")?;
        }
        if self.scale <= 0 {
            f.write_str(&digits)?;
            if v != 0 {
                for _ in 0..-i32::from(self.scale) {
                    f.write_str("0")?;
                }
            }
            return Ok(());
        }
        let scale = usize::from(self.scale.unsigned_abs());
        if digits.len() > scale {
            let (whole, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{whole}.{frac}")
        } else {
            write!(f, "0.{digits:0>scale$}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_show_as_rfc_3339_with_their_units_digits() {
        let utc = Some(Arc::new("UTC".to_owned()));
        let t = |v, unit, zone: &Option<Arc<String>>| Timestamp::new(v, unit, zone.clone()).to_string();
        assert_eq!(t(1_714_566_600_250, TimeUnit::Millisecond, &utc), "2024-05-01T12:30:00.250Z");
        assert_eq!(t(1_714_566_600, TimeUnit::Second, &None), "2024-05-01T12:30:00");
        assert_eq!(t(-1, TimeUnit::Microsecond, &None), "1969-12-31T23:59:59.999999");
        assert_eq!(t(5, TimeUnit::Nanosecond, &utc), "1970-01-01T00:00:00.000000005Z");
        let dt = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap().and_hms_milli_opt(12, 30, 0, 250).unwrap();
        let ts = Timestamp::from_naive(dt, TimeUnit::Millisecond, None).unwrap();
        assert_eq!(ts.value(), 1_714_566_600_250);
        assert_eq!(ts.to_naive(), Some(dt));
        assert_eq!(Timestamp::from_naive(dt, TimeUnit::Second, None), None, "a fraction the unit cannot hold");
        let far = NaiveDate::from_ymd_opt(2300, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        assert_eq!(Timestamp::from_naive(far, TimeUnit::Nanosecond, None), None, "past an i64 of nanoseconds");
    }

    #[test]
    fn dates_count_days_from_1970() {
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let days = days_of_date(d);
        assert_eq!(days, 19_782);
        assert_eq!(date_of_days(days), Some(d));
        let mut s = String::new();
        write_date(-1, &mut s).unwrap();
        assert_eq!(s, "1969-12-31");
    }

    #[test]
    fn decimals_parse_exactly_and_show_their_scale() {
        let d = |t: &str, p, s| Decimal::parse(t, p, s).map(|d| (d.value(), d.to_string()));
        assert_eq!(d("12.5", 5, 2), Ok((1250, "12.50".into())));
        assert_eq!(d("-0.05", 5, 2), Ok((-5, "-0.05".into())));
        assert_eq!(d("1.2300", 5, 2), Ok((123, "1.23".into())));
        assert_eq!(d("1.5e2", 5, 0), Ok((150, "150".into())));
        assert_eq!(d(".5", 3, 1), Ok((5, "0.5".into())));
        assert_eq!(d("0", 3, 2), Ok((0, "0.00".into())));
        assert_eq!(d("1200", 4, -2), Ok((12, "1200".into())));
        assert_eq!(d("1.234", 5, 2), Err("\"1.234\" has more than 2 decimal places".into()));
        assert_eq!(d("1234.5", 5, 2), Err("\"1234.5\" has more than 5 digits".into()));
        assert_eq!(d("1.2.3", 5, 2), Err("\"1.2.3\" is not a decimal number".into()));
        assert_eq!(d("", 5, 2), Err("\"\" is not a decimal number".into()));
        let max = "9".repeat(38);
        assert_eq!(d(&max, 38, 0).map(|x| x.1), Ok(max.clone()));
        assert!(Decimal::new(1, 39, 0).is_err());
        assert_eq!(std::mem::size_of::<crate::Value>(), 32, "a value stays 32 bytes");
        assert_eq!(std::mem::size_of::<crate::ValueRef<'_>>(), 24, "and a borrowed one 24");
    }
}
