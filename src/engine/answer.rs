//! Reading what a respondent typed: numbers, dates, yes/no, free text.
//!
//! Each function returns the normalised value to store, or `None` when the input is not a
//! valid answer (the caller turns that into a re-prompt). Never panics on any input.

/// A number within `min..=max`; whole numbers only unless `decimals`. Accepts `,` as decimal mark.
pub fn number(input: &str, min: Option<f64>, max: Option<f64>, decimals: bool) -> Option<String> {
    let s = input.trim().replace(',', ".");
    if s.is_empty() || s.len() > 24 {
        return None;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
    {
        return None;
    }
    let n: f64 = s.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    if !decimals && n.fract() != 0.0 {
        return None;
    }
    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
        return None;
    }
    Some(format_number(n))
}

/// The shortest text for a number: `3` rather than `3.0`.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// `yes` or `no` from `1`/`2`, the English words, or the flow's own words for yes and no.
pub fn yes_no(input: &str, yes_words: &[&str], no_words: &[&str]) -> Option<&'static str> {
    let s = input.trim();
    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(s));
    if s == "1" || is(&["y", "yes"]) || is(yes_words) {
        Some("yes")
    } else if s == "2" || is(&["n", "no"]) || is(no_words) {
        Some("no")
    } else {
        None
    }
}

/// A calendar date as `YYYY-MM-DD`, from DD/MM/YYYY, DD-MM-YYYY, DD.MM.YYYY, DDMMYYYY or
/// YYYY-MM-DD. Checks the day exists (leap years included).
pub fn date(input: &str) -> Option<String> {
    let s = input.trim();
    let parts: Vec<&str> = s.split(['/', '-', '.', ' ']).collect();
    let (d, m, y) = match parts.as_slice() {
        [one] if one.len() == 8 && one.chars().all(|c| c.is_ascii_digit()) => {
            (&one[0..2], &one[2..4], &one[4..8])
        }
        [y, m, d] if y.len() == 4 => (*d, *m, *y),
        [d, m, y] if y.len() == 4 => (*d, *m, *y),
        _ => return None,
    };
    let all_digits =
        |x: &str| !x.is_empty() && x.len() <= 4 && x.chars().all(|c| c.is_ascii_digit());
    if !(all_digits(d) && all_digits(m) && all_digits(y)) {
        return None;
    }
    let (d, m, y): (u32, u32, u32) = (d.parse().ok()?, m.parse().ok()?, y.parse().ok()?);
    if !(1..=12).contains(&m) || !(1800..=2200).contains(&y) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d == 0 || d > days {
        return None;
    }
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// Free text: trimmed, not empty, at most `max_length` characters.
pub fn text(input: &str, max_length: usize) -> Option<String> {
    let s = input.trim();
    if s.is_empty() || s.chars().count() > max_length {
        return None;
    }
    Some(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(
            number(" 3 ", Some(1.0), Some(5.0), false).as_deref(),
            Some("3")
        );
        assert_eq!(number("6", Some(1.0), Some(5.0), false), None);
        assert_eq!(number("0", Some(1.0), Some(5.0), false), None);
        assert_eq!(number("2.5", None, None, false), None);
        assert_eq!(number("2,5", None, None, true).as_deref(), Some("2.5"));
        assert_eq!(number("abc", None, None, true), None);
        assert_eq!(number("inf", None, None, true), None);
        assert_eq!(number("", None, None, true), None);
        assert_eq!(number("-4", None, None, false).as_deref(), Some("-4"));
    }

    #[test]
    fn dates() {
        assert_eq!(date("25/12/1990").as_deref(), Some("1990-12-25"));
        assert_eq!(date("25121990").as_deref(), Some("1990-12-25"));
        assert_eq!(date("1990-12-25").as_deref(), Some("1990-12-25"));
        assert_eq!(date("29/02/2024").as_deref(), Some("2024-02-29"));
        assert_eq!(date("29/02/2023"), None);
        assert_eq!(date("31/04/2023"), None);
        assert_eq!(date("00/01/2023"), None);
        assert_eq!(date("1/13/2023"), None);
        assert_eq!(date("hello"), None);
    }

    #[test]
    fn yes_and_no() {
        assert_eq!(yes_no("1", &[], &[]), Some("yes"));
        assert_eq!(yes_no("NDIYO", &["Ndiyo"], &["Hapana"]), Some("yes"));
        assert_eq!(yes_no("hapana", &["Ndiyo"], &["Hapana"]), Some("no"));
        assert_eq!(yes_no("3", &[], &[]), None);
    }

    #[test]
    fn texts() {
        assert_eq!(text("  hi ", 10).as_deref(), Some("hi"));
        assert_eq!(text("   ", 10), None);
        assert_eq!(text("abcdef", 5), None);
    }
}
