//! Calendar dates for contact fields and segments, without a date library: reading the ways
//! people write a date (`2026-03-31`, `31/03/2026`, `31-03-2026`, `31.03.2026`: day before
//! month, as in Kenya), and converting between dates and milliseconds since the epoch (UTC).
//!
//! It never guesses month-first dates and never reads the clock (callers pass the time).

/// A valid calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

const MS_PER_DAY: i64 = 86_400_000;

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// The date, if it exists (years 1000 to 9999).
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let valid = (1000..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month);
        valid.then_some(Date { year, month, day })
    }

    /// `YYYY-MM-DD`, the stored form (it sorts as the dates do).
    pub fn to_iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    pub fn days_since_epoch(self) -> i64 {
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = i64::from(self.month);
        let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5
            + i64::from(self.day)
            - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// Midnight UTC at the start of the date, in ms since the epoch.
    pub fn start_ms(self) -> i64 {
        self.days_since_epoch() * MS_PER_DAY
    }

    /// The UTC date of an instant (ms since the epoch).
    pub fn of_ms(ms: i64) -> Date {
        let (year, month, day) = crate::result_store::export::civil_date(ms.div_euclid(MS_PER_DAY));
        Date {
            year: i32::try_from(year).unwrap_or(i32::MAX),
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
        }
    }
}

/// A date written `2026-03-31`, or day first: `31/03/2026`, `31-03-2026`, `31.03.2026`.
pub fn parse_date(text: &str) -> Option<Date> {
    let text = text.trim();
    let parts: Vec<&str> = text.split(['-', '/', '.']).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let number = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = if a.len() == 4 {
        (number(a)?, number(b)?, number(c)?)
    } else if c.len() == 4 {
        (number(c)?, number(b)?, number(a)?)
    } else {
        return None;
    };
    Date::new(i32::try_from(year).ok()?, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_read_day_first_or_iso() {
        let d = Date::new(2026, 3, 31);
        assert_eq!(parse_date("2026-03-31"), d);
        assert_eq!(parse_date("31/03/2026"), d);
        assert_eq!(parse_date("31-3-2026"), d);
        assert_eq!(parse_date("31.03.2026"), d);
        assert_eq!(parse_date("29/02/2025"), None);
        assert_eq!(parse_date("29/02/2024"), Date::new(2024, 2, 29));
        assert_eq!(parse_date("03/31/2026"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2026-03"), None);
    }

    #[test]
    fn dates_and_instants_convert_both_ways() {
        assert_eq!(Date::new(1970, 1, 1).map(Date::start_ms), Some(0));
        let d = Date::new(2026, 12, 7).expect("date");
        assert_eq!(Date::of_ms(d.start_ms()), d);
        assert_eq!(Date::of_ms(d.start_ms() + MS_PER_DAY - 1), d);
        assert_eq!(d.start_ms(), 1_796_601_600_000);
        let leap = Date::new(2024, 2, 29).expect("date");
        assert_eq!(Date::of_ms(leap.start_ms()), leap);
    }
}
