//! Calendar dates for date-range dimensions (`2024-01-31`) and event times,
//! on jiff (`jiff::civil::Date`, `jiff::Timestamp`): proleptic Gregorian,
//! years 0000 to 9999 in the `YYYY-MM-DD` form, UTC.
//!
//! Every requested ref is checked against its date range and the planner
//! lists ranges of up to a million dates, so parsing checks the fixed shape
//! by hand and builds the date with `civil::Date::new` (jiff's text parser
//! accepts more forms than a partition value may have), and stepping is
//! whole-day arithmetic on a `SignedDuration`, not `Span` arithmetic.

use std::fmt;

use jiff::SignedDuration;
use jiff::civil;

const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(civil::Date);

impl Date {
    /// Parses `YYYY-MM-DD`, refusing impossible dates like `2023-02-29`.
    pub fn parse(text: &str) -> Result<Date, String> {
        let bad = || {
            format!(
                "{} is not a date of the form YYYY-MM-DD",
                crate::refs::quoted(text)
            )
        };
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| -> Result<i16, String> {
            bytes[range].iter().try_fold(0i16, |value, byte| {
                if byte.is_ascii_digit() {
                    Ok(value * 10 + i16::from(byte - b'0'))
                } else {
                    Err(bad())
                }
            })
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        // Two digits: month and day are at most 99, which fits an i8.
        let (month, day) = (
            i8::try_from(month).map_err(|_| bad())?,
            i8::try_from(day).map_err(|_| bad())?,
        );
        civil::Date::new(year, month, day)
            .map(Date)
            .map_err(|_| format!("{} is not a valid calendar date", crate::refs::quoted(text)))
    }

    /// The date `days` later (earlier if negative), or `None` past the
    /// years jiff represents (-9999 to 9999).
    pub fn add_days(self, days: i64) -> Option<Date> {
        let seconds = days.checked_mul(SECONDS_PER_DAY)?;
        self.0
            .checked_add(SignedDuration::from_secs(seconds))
            .ok()
            .map(Date)
    }

    pub fn days_until(self, other: Date) -> i64 {
        self.0.duration_until(other.0).as_secs() / SECONDS_PER_DAY
    }

    /// Days since 1970-01-01 (negative before).
    pub fn unix_day(self) -> i64 {
        Date(civil::date(1970, 1, 1)).days_until(self)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = (self.0.year(), self.0.month(), self.0.day());
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

/// `2024-01-31 12:34:56 UTC` for milliseconds since the Unix epoch.
pub fn format_time_ms(ms: u64) -> String {
    let Some(time) = i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
    else {
        // Past year 9999: no real clock records that, so no calendar form.
        return format!("{ms} ms after 1970-01-01 00:00:00 UTC");
    };
    let civil = jiff::tz::Offset::UTC.to_datetime(time);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        Date(civil.date()),
        civil.hour(),
        civil.minute(),
        civil.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_times() {
        assert_eq!(format_time_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time_ms(1_706_704_496_000), "2024-01-31 12:34:56 UTC");
    }

    #[test]
    fn parses_and_steps_across_boundaries() {
        let date = Date::parse("2024-02-28").unwrap();
        assert_eq!(date.add_days(1).unwrap().to_string(), "2024-02-29");
        assert_eq!(date.add_days(2).unwrap().to_string(), "2024-03-01");
        assert_eq!(date.add_days(-59).unwrap().to_string(), "2023-12-31");
        assert_eq!(
            Date::parse("2023-12-31")
                .unwrap()
                .add_days(1)
                .unwrap()
                .to_string(),
            "2024-01-01"
        );
        assert_eq!(Date::parse("1970-01-01").unwrap().unix_day(), 0);
        assert_eq!(Date::parse("2024-01-31").unwrap().unix_day(), 19_753);
        assert_eq!(Date::parse("9999-12-31").unwrap().add_days(1), None);
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::parse("2024-13-01").is_err());
        assert!(Date::parse("2024-1-01").is_err());
        assert!(Date::parse("yesterday").is_err());
    }

    #[test]
    fn refuses_impossible_dates_and_accepts_leap_days() {
        assert!(Date::parse("2024-02-29").is_ok());
        assert_eq!(
            Date::parse("2024-02-30").unwrap_err(),
            "\"2024-02-30\" is not a valid calendar date"
        );
        assert_eq!(
            Date::parse("2023-02-29").unwrap_err(),
            "\"2023-02-29\" is not a valid calendar date"
        );
        assert!(Date::parse("1900-02-29").is_err());
        assert!(Date::parse("2000-02-29").is_ok());
        assert!(Date::parse("2024-04-31").is_err());
        assert!(Date::parse("2024-00-10").is_err());
        assert!(Date::parse("2024-01-00").is_err());
        assert_eq!(
            Date::parse("2024-01-3x").unwrap_err(),
            "\"2024-01-3x\" is not a date of the form YYYY-MM-DD"
        );
        assert!(Date::parse("+024-01-30").is_err());
        assert!(Date::parse("2024-01-30T00:00:00Z").is_err());
    }

    #[test]
    fn days_until_counts_whole_days() {
        let start = Date::parse("2024-02-28").unwrap();
        assert_eq!(start.days_until(Date::parse("2024-03-01").unwrap()), 2);
        assert_eq!(Date::parse("2024-03-01").unwrap().days_until(start), -2);
        assert_eq!(
            Date::parse("0000-01-01")
                .unwrap()
                .days_until(Date::parse("9999-12-31").unwrap()),
            3_652_424
        );
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(days in -800_000i64..800_000) {
            let epoch = Date::parse("1970-01-01").unwrap();
            let date = epoch.add_days(days).unwrap();
            prop_assert_eq!(epoch.days_until(date), days);
            let text = date.to_string();
            if date.0.year() >= 0 {
                prop_assert_eq!(Date::parse(&text).unwrap(), date);
            }
        }
    }
}
