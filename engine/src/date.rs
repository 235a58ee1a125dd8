//! Calendar dates for date-range dimensions (`2024-01-31`), without a
//! dependency: days since the Unix epoch, proleptic Gregorian calendar.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    days: i64,
}

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
        let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
            let part = &text[range];
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(format!(
                "{} is not a valid calendar date",
                crate::refs::quoted(text)
            ));
        }
        Ok(Date {
            days: days_from_civil(year, month, day),
        })
    }

    pub fn add_days(self, days: i64) -> Date {
        Date {
            days: self.days + days,
        }
    }

    pub fn days_until(self, other: Date) -> i64 {
        other.days - self.days
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.days);
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

/// `2024-01-31 12:34:56 UTC` for milliseconds since the Unix epoch.
pub fn format_time_ms(ms: u64) -> String {
    let seconds = (ms / 1000) as i64;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        Date { days },
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (public domain), http-less summary: shift the
// year to start in March so the leap day is last, then count eras of 400 years.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        assert_eq!(date.add_days(1).to_string(), "2024-02-29");
        assert_eq!(date.add_days(2).to_string(), "2024-03-01");
        assert_eq!(
            Date::parse("2023-12-31").unwrap().add_days(1).to_string(),
            "2024-01-01"
        );
        assert_eq!(Date::parse("1970-01-01").unwrap().days, 0);
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::parse("2024-13-01").is_err());
        assert!(Date::parse("2024-1-01").is_err());
        assert!(Date::parse("yesterday").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(days in -800_000i64..800_000) {
            let date = Date { days };
            let text = date.to_string();
            if days >= days_from_civil(0, 1, 1) && days < days_from_civil(10000, 1, 1) {
                prop_assert_eq!(Date::parse(&text).unwrap(), date);
            }
        }
    }
}
