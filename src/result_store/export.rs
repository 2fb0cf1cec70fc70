//! CSV export of stored responses: one row per response, one column per result.
//!
//! Columns: `response_id, flow_id, flow_version, channel, language, status, started_at,
//! ended_at, subscriber`, then for each requested result name its value, followed by a
//! `<name>_label` column when at least one exported answer to it carries a label (menus,
//! yes/no, language choices). A result never answered is an empty cell. Times are RFC 3339
//! UTC with milliseconds (`2026-03-01T08:30:05.120Z`); `ended_at` is empty while active.
//! RFC 4180 quoting (fields with a comma, quote or line break are quoted, quotes doubled),
//! CRLF line ends.
//!
//! Subscribers are pseudonymised by default: the first 16 hex digits of
//! HMAC-SHA256(secret, number), stable for one secret so answers of one person can be linked
//! without revealing the number; raw numbers appear only when the caller passes no secret.
//! An empty subscriber stays empty.
//!
//! Formula injection: a spreadsheet may run a cell that starts with `=`, `+`, `-`, `@`, a tab
//! or a carriage return as a formula. Such cells get a leading apostrophe (`'=1+1`), which
//! spreadsheets show as text. A cell that is just a number (optional sign, digits, optional
//! decimal part: `-5`, `+254712345678`, `3.5`) is left alone: spreadsheets read it as a number,
//! never as a formula, and negative answers and phone numbers stay usable.
//!
//! It never reads the database itself (callers pass the rows) and never writes a phone
//! number unless the caller explicitly asked for raw numbers.

use std::borrow::Cow;

use super::ResponseRow;
use crate::pseudonym::Pseudonymiser;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing to the output failed (disk full, closed pipe...).
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Flushing the output failed.
    #[error("writing CSV: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `rows` as CSV to `out`, with one value column per entry of `result_names` (in that
/// order) and label columns as described in the module documentation. With
/// `pseudonymise = Some(..)` subscribers are replaced by their pseudonyms (the same as in
/// logs); `None` writes raw numbers and should only be used when they were explicitly asked
/// for.
pub fn export_csv(
    rows: &[ResponseRow],
    result_names: &[String],
    pseudonymise: Option<&Pseudonymiser>,
    out: impl std::io::Write,
) -> Result<(), ExportError> {
    let labelled: Vec<bool> = result_names
        .iter()
        .map(|name| {
            rows.iter().any(|row| {
                row.answers
                    .get(name)
                    .is_some_and(|(_, label)| label.is_some())
            })
        })
        .collect();

    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out);

    let mut header: Vec<Cow<'_, str>> = [
        "response_id",
        "flow_id",
        "flow_version",
        "channel",
        "language",
        "status",
        "started_at",
        "ended_at",
        "subscriber",
    ]
    .into_iter()
    .map(Cow::Borrowed)
    .collect();
    for (name, &has_label) in result_names.iter().zip(&labelled) {
        header.push(neutralise(name));
        if has_label {
            header.push(Cow::Owned(
                neutralise(&format!("{name}_label")).into_owned(),
            ));
        }
    }
    writer.write_record(header.iter().map(|cell| cell.as_ref()))?;

    let mut record: Vec<Cow<'_, str>> = Vec::with_capacity(header.len());
    for row in rows {
        record.clear();
        record.push(neutralise(&row.response_id));
        record.push(neutralise(&row.flow_id));
        record.push(Cow::Owned(row.flow_version.to_string()));
        record.push(neutralise(&row.channel));
        record.push(neutralise(&row.language));
        record.push(Cow::Borrowed(row.status.as_str()));
        record.push(Cow::Owned(format_utc_ms(row.started_at_ms)));
        record.push(Cow::Owned(
            row.ended_at_ms.map(format_utc_ms).unwrap_or_default(),
        ));
        record.push(match (pseudonymise, row.subscriber.is_empty()) {
            (_, true) => Cow::Borrowed(""),
            (Some(pseudonyms), false) => Cow::Owned(pseudonyms.of(&row.subscriber)),
            (None, false) => neutralise(&row.subscriber),
        });
        for (name, &has_label) in result_names.iter().zip(&labelled) {
            let answer = row.answers.get(name);
            record.push(answer.map_or(Cow::Borrowed(""), |(value, _)| neutralise(value)));
            if has_label {
                record.push(
                    answer
                        .and_then(|(_, label)| label.as_deref())
                        .map_or(Cow::Borrowed(""), neutralise),
                );
            }
        }
        writer.write_record(record.iter().map(|cell| cell.as_ref()))?;
    }
    writer.flush()?;
    Ok(())
}

/// `value`, with a leading apostrophe if a spreadsheet could take it for a formula.
pub(crate) fn neutralise(value: &str) -> Cow<'_, str> {
    let risky = matches!(
        value.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r')
    );
    if risky && !is_plain_number(value) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Optional sign, one or more ASCII digits, optionally `.` and one or more digits.
fn is_plain_number(value: &str) -> bool {
    let unsigned = value
        .strip_prefix('-')
        .or_else(|| value.strip_prefix('+'))
        .unwrap_or(value);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `1970-01-01T00:00:00.000Z`.
pub fn format_utc_ms(ms: i64) -> String {
    const MS_PER_DAY: i64 = 86_400_000;
    let days = ms.div_euclid(MS_PER_DAY);
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_date(days);
    let hours = ms_of_day / 3_600_000;
    let minutes = ms_of_day / 60_000 % 60;
    let seconds = ms_of_day / 1000 % 60;
    let millis = ms_of_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01.
///
/// Works in 400-year eras (146 097 days each), counted from 0000-03-01 so that the leap day
/// is the last day of each shifted year; months are then counted from March.
pub(crate) fn civil_date(days: i64) -> (i64, i64, i64) {
    const DAYS_PER_ERA: i64 = 146_097;
    // Days from 0000-03-01 to 1970-01-01.
    const EPOCH_SHIFT: i64 = 719_468;
    let shifted = days + EPOCH_SHIFT;
    let era = shifted.div_euclid(DAYS_PER_ERA);
    let day_of_era = shifted.rem_euclid(DAYS_PER_ERA);
    // Years into the era: remove the leap days (one per 4 years, none per 100, one per 400).
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month counted from March (0) to February (11): 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_utc_ms(1_772_353_805_120), "2026-03-01T08:30:05.120Z");
        assert_eq!(format_utc_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_utc_ms(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn never_panics_at_the_extremes() {
        assert!(!format_utc_ms(i64::MAX).is_empty());
        assert!(!format_utc_ms(i64::MIN).is_empty());
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // 1900-03-01 to 2100-03-01: consecutive days give consecutive dates.
        let mut previous = civil_date(-25_508);
        assert_eq!(previous, (1900, 3, 1));
        for days in -25_507..47_541 {
            let (y, m, d) = civil_date(days);
            let (py, pm, pd) = previous;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let leap = py % 4 == 0 && (py % 100 != 0 || py % 400 == 0);
            let month_length = match pm {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let next_month = d == 1
                && pd == month_length
                && ((y, m) == (py, pm + 1) || (y, m, pm) == (py + 1, 1, 12));
            assert!(next_day || next_month, "{previous:?} -> {:?}", (y, m, d));
            previous = (y, m, d);
        }
        assert_eq!(previous, (2100, 2, 28));
    }

    #[test]
    fn formula_like_cells_are_neutralised() {
        assert_eq!(neutralise("=1+1"), "'=1+1");
        assert_eq!(neutralise("+cmd"), "'+cmd");
        assert_eq!(neutralise("-2+3"), "'-2+3");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("\tx"), "'\tx");
        assert_eq!(neutralise("-5"), "-5");
        assert_eq!(neutralise("+254712345678"), "+254712345678");
        assert_eq!(neutralise("-3.25"), "-3.25");
        assert_eq!(neutralise("-"), "'-");
        assert_eq!(neutralise("-.5"), "'-.5");
        assert_eq!(neutralise("fine = ok"), "fine = ok");
    }
}
