//! What one operator wants in a submit_sm, beyond the bind itself: how long messages are
//! marked as one (`concatenation`), the TON/NPI of each kind of address, the validity period
//! (an SMPP relative time), and which `command_status` values are temporary and how a part
//! refused with one is submitted again (`temporary_errors`, `submit_retry`).
//!
//! Plain values read from the operator's config and used by the ESME; nothing here sends,
//! sleeps or keeps state. Statuses are [`CommandStatus`] values classified by a closed enum
//! ([`StatusClass`]), never by their names as text.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::status::CommandStatus;
use crate::encoding::gsm7::GsmCoding;
use crate::encoding::split::Concat;

/// How an operator wants a long message marked as one message (`concatenation:` in the
/// operator's config). Operators differ; most take `udh8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concatenation {
    /// UDH `05 00 03 ref total seq` in short_message, esm_class 0x40 (153 GSM septets a part).
    #[default]
    Udh8,
    /// UDH `06 08 04 refHi refLo total seq`, esm_class 0x40 (152 GSM septets a part).
    Udh16,
    /// SAR TLVs 0x020C/0x020E/0x020F on bare parts; the SMSC builds the UDH.
    Sar,
    /// The whole text in one message_payload TLV (0x0424); the SMSC splits it.
    Payload,
}

impl Concatenation {
    /// The split mode for one message, with that message's reference (8-bit UDH keeps the
    /// low 8 bits).
    pub fn with_reference(self, reference: u16) -> Concat {
        match self {
            Concatenation::Udh8 => Concat::Udh8 {
                reference: (reference & 0xFF) as u8,
            },
            Concatenation::Udh16 => Concat::Udh16 { reference },
            Concatenation::Sar => Concat::Sar { reference },
            Concatenation::Payload => Concat::Payload,
        }
    }
}

/// A type of number and numbering plan indicator pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TonNpi {
    /// Type of number (0 unknown, 1 international, 2 national, 3 network specific,
    /// 4 subscriber, 5 alphanumeric, 6 abbreviated).
    pub ton: u8,
    /// Numbering plan (0 unknown, 1 ISDN/E.164, 9 private...).
    pub npi: u8,
}

/// What kind of address a written sender or recipient is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// `+` and digits: E.164, sent without the `+`.
    International,
    /// Digits only, at most [`SHORT_CODE_MAX_DIGITS`] of them (`20880`).
    ShortCode,
    /// Contains a letter (`BARAZA`).
    Alphanumeric,
    /// Anything else (a longer number without `+`, as written).
    Other,
}

/// The longest all-digit address taken for a short code rather than a number.
pub const SHORT_CODE_MAX_DIGITS: usize = 8;

impl AddressKind {
    /// The kind of `written` and the digits or name to put in the PDU.
    pub fn of(written: &str) -> (AddressKind, String) {
        let written = written.trim();
        if let Some(digits) = written.strip_prefix('+') {
            return (AddressKind::International, digits.to_string());
        }
        if written.chars().any(|c| c.is_ascii_alphabetic()) {
            return (AddressKind::Alphanumeric, written.to_string());
        }
        if !written.is_empty()
            && written.len() <= SHORT_CODE_MAX_DIGITS
            && written.chars().all(|c| c.is_ascii_digit())
        {
            return (AddressKind::ShortCode, written.to_string());
        }
        (AddressKind::Other, written.to_string())
    }
}

/// TON/NPI per kind of address, for one direction (source or destination) of one operator.
/// Any kind left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressPlan {
    /// `+254711…`: default TON 1 (international), NPI 1 (E.164).
    pub international: TonNpi,
    /// `20880`: default TON 3 (network specific), NPI 0.
    pub short_code: TonNpi,
    /// `BARAZA`: default TON 5 (alphanumeric), NPI 0.
    pub alphanumeric: TonNpi,
    /// A longer number without `+`: default TON 0 (unknown), NPI 1 (E.164).
    pub other: TonNpi,
}

impl Default for AddressPlan {
    fn default() -> Self {
        AddressPlan {
            international: TonNpi { ton: 1, npi: 1 },
            short_code: TonNpi { ton: 3, npi: 0 },
            alphanumeric: TonNpi { ton: 5, npi: 0 },
            other: TonNpi { ton: 0, npi: 1 },
        }
    }
}

impl AddressPlan {
    /// TON, NPI and the address octets for `written`.
    pub fn address(&self, written: &str) -> (u8, u8, String) {
        let (kind, address) = AddressKind::of(written);
        let pair = match kind {
            AddressKind::International => self.international,
            AddressKind::ShortCode => self.short_code,
            AddressKind::Alphanumeric => self.alphanumeric,
            AddressKind::Other => self.other,
        };
        (pair.ton, pair.npi, address)
    }
}

/// The longest validity an SMPP relative time can say without months or years (whose
/// length the SMSC would have to guess): 99 days, 23:59:59.
pub const MAX_VALIDITY_SECONDS: u64 = 99 * 86_400 + 86_399;

/// `validity_period` as an SMPP 3.4 relative time, `YYMMDDhhmmss000R` (§7.1.1): years and
/// months always 00, so the SMSC need not decide how long a month is.
pub fn relative_time(validity: Duration) -> String {
    let total = validity.as_secs().min(MAX_VALIDITY_SECONDS);
    let days = total / 86_400;
    let hours = total % 86_400 / 3_600;
    let minutes = total % 3_600 / 60;
    let seconds = total % 60;
    format!("0000{days:02}{hours:02}{minutes:02}{seconds:02}000R")
}

/// Reads `validity_seconds`: 0 means none (the SMSC's default), more than
/// [`MAX_VALIDITY_SECONDS`] is a config error.
pub fn deserialize_validity<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let seconds = u64::deserialize(deserializer)?;
    if seconds > MAX_VALIDITY_SECONDS {
        return Err(de::Error::custom(format!(
            "validity_seconds {seconds} is longer than an SMPP relative time can say \
             (at most {MAX_VALIDITY_SECONDS}: 99 days, 23:59:59); use 0 for the SMSC's default"
        )));
    }
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

/// The default validity: 24 hours, so a survey question never reaches a handset days late.
pub fn default_validity() -> Option<Duration> {
    Some(Duration::from_secs(86_400))
}

/// Reads `gsm_data_coding`: `0` (SMSC default) or `1` (IA5), also `zero` / `one`.
pub fn deserialize_gsm_coding<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<GsmCoding, D::Error> {
    struct GsmCodingVisitor;
    impl Visitor<'_> for GsmCodingVisitor {
        type Value = GsmCoding;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the data_coding for GSM 03.38 text: 0 or 1")
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<GsmCoding, E> {
            match value {
                0 => Ok(GsmCoding::Zero),
                1 => Ok(GsmCoding::One),
                other => Err(E::custom(format!(
                    "gsm_data_coding must be 0 (SMSC default) or 1 (IA5), not {other}"
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<GsmCoding, E> {
            match u64::try_from(value) {
                Ok(value) => self.visit_u64(value),
                Err(_) => Err(E::custom(format!(
                    "gsm_data_coding must be 0 (SMSC default) or 1 (IA5), not {value}"
                ))),
            }
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<GsmCoding, E> {
            match value.trim() {
                "0" | "zero" => Ok(GsmCoding::Zero),
                "1" | "one" => Ok(GsmCoding::One),
                other => Err(E::custom(format!(
                    "gsm_data_coding must be 0 (SMSC default) or 1 (IA5), not `{other}`"
                ))),
            }
        }
    }
    deserializer.deserialize_any(GsmCodingVisitor)
}

/// What a submit_sm_resp status asks of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// ESME_ROK.
    Ok,
    /// ESME_RTHROTTLED or ESME_RMSGQFUL: pause the whole bind and send the same part again
    /// (always, whatever the operator's list says).
    Throttling,
    /// In the operator's temporary list: the part was not taken; send it again after a
    /// backoff, a bounded number of times.
    Temporary,
    /// Anything else: the part is rejected for good.
    Permanent,
}

/// The statuses an operator uses for "not now": a part refused with one was not taken, so
/// submitting it again later is safe. Read from names (`ESME_RSYSERR` or `RSYSERR`), hex
/// (`0x08`, also as a string) or decimal numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryErrors(Vec<CommandStatus>);

impl Default for TemporaryErrors {
    /// ESME_RSYSERR (0x08), ESME_RMSGQFUL (0x14), ESME_RSUBMITFAIL (0x45), ESME_RTHROTTLED
    /// (0x58) and ESME_RX_T_APPN (0x64). Not ESME_RX_P_APPN (0x65) nor ESME_RX_R_APPN
    /// (0x66): the specification calls them permanent and reject.
    fn default() -> Self {
        TemporaryErrors(vec![
            CommandStatus::ESME_RSYSERR,
            CommandStatus::ESME_RMSGQFUL,
            CommandStatus::ESME_RSUBMITFAIL,
            CommandStatus::ESME_RTHROTTLED,
            CommandStatus::ESME_RX_T_APPN,
        ])
    }
}

impl TemporaryErrors {
    /// Exactly these statuses.
    pub fn new(statuses: impl IntoIterator<Item = CommandStatus>) -> TemporaryErrors {
        TemporaryErrors(statuses.into_iter().collect())
    }

    /// The statuses, as configured.
    pub fn statuses(&self) -> &[CommandStatus] {
        &self.0
    }

    /// What `status` asks for under this operator's list.
    pub fn classify(&self, status: CommandStatus) -> StatusClass {
        if status.is_ok() {
            StatusClass::Ok
        } else if status.is_throttling() {
            StatusClass::Throttling
        } else if self.0.contains(&status) {
            StatusClass::Temporary
        } else {
            StatusClass::Permanent
        }
    }
}

/// One status as written in the config: a name or a number.
fn parse_status(written: &str) -> Result<CommandStatus, String> {
    let text = written.trim();
    let number = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        text.parse::<u32>().ok()
    } else {
        None
    };
    if let Some(number) = number {
        return Ok(CommandStatus(number));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("ESME_") {
        upper
    } else {
        format!("ESME_{upper}")
    };
    // Every defined status is below 0x100: look the name up among them.
    (0..=0xFFu32)
        .map(CommandStatus)
        .find(|status| status.name() == Some(name.as_str()))
        .ok_or_else(|| {
            format!(
                "`{written}` is not an SMPP command_status: write a name such as ESME_RSYSERR, \
                 or a number such as 0x08 or 8"
            )
        })
}

impl<'de> Deserialize<'de> for TemporaryErrors {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct One(CommandStatus);
        impl<'de> Deserialize<'de> for One {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StatusVisitor;
                impl Visitor<'_> for StatusVisitor {
                    type Value = CommandStatus;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an SMPP command_status: a name (ESME_RSYSERR) or a number")
                    }
                    fn visit_u64<E: de::Error>(self, value: u64) -> Result<CommandStatus, E> {
                        u32::try_from(value)
                            .map(CommandStatus)
                            .map_err(|_| E::custom(format!("{value} is not a 32-bit status")))
                    }
                    fn visit_i64<E: de::Error>(self, value: i64) -> Result<CommandStatus, E> {
                        u32::try_from(value)
                            .map(CommandStatus)
                            .map_err(|_| E::custom(format!("{value} is not a 32-bit status")))
                    }
                    fn visit_str<E: de::Error>(self, value: &str) -> Result<CommandStatus, E> {
                        parse_status(value).map_err(E::custom)
                    }
                }
                deserializer.deserialize_any(StatusVisitor).map(One)
            }
        }
        let list = Vec::<One>::deserialize(deserializer)?;
        Ok(TemporaryErrors(list.into_iter().map(|one| one.0).collect()))
    }
}

/// How a part refused with a temporary status is submitted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most submissions of one part, the first included (1: never again).
    pub attempts: u32,
    /// Wait before the second submission; doubles for each later one.
    pub first_delay: Duration,
    /// Longest wait between two submissions.
    pub ceiling: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_secs(1),
            ceiling: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): `first_delay * 2^(attempt-1)`, at
    /// most `ceiling`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.ceiling.max(self.first_delay))
    }
}

/// `submit_retry:` as written in the operator's config (milliseconds), checked.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetryConfig {
    attempts: u32,
    first_delay_ms: u64,
    ceiling_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetryConfig {
            attempts: policy.attempts,
            first_delay_ms: policy.first_delay.as_millis() as u64,
            ceiling_ms: policy.ceiling.as_millis() as u64,
        }
    }
}

impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RetryConfig::deserialize(deserializer)?;
        if raw.attempts == 0 {
            return Err(de::Error::custom(
                "submit_retry.attempts counts the first submission: at least 1",
            ));
        }
        if raw.ceiling_ms < raw.first_delay_ms {
            return Err(de::Error::custom(format!(
                "submit_retry.ceiling_ms ({}) is shorter than first_delay_ms ({})",
                raw.ceiling_ms, raw.first_delay_ms
            )));
        }
        Ok(RetryPolicy {
            attempts: raw.attempts,
            first_delay: Duration::from_millis(raw.first_delay_ms),
            ceiling: Duration::from_millis(raw.ceiling_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(
            relative_time(Duration::from_secs(86_400)),
            "000001000000000R"
        );
        assert_eq!(
            relative_time(Duration::from_secs(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)),
            "000002030405000R"
        );
        assert_eq!(
            relative_time(Duration::from_secs(MAX_VALIDITY_SECONDS)),
            "000099235959000R"
        );
        assert_eq!(relative_time(Duration::from_secs(90)), "000000000130000R");
    }

    #[test]
    fn addresses_by_kind() {
        let plan = AddressPlan::default();
        assert_eq!(plan.address("+254711000001"), (1, 1, "254711000001".into()));
        assert_eq!(plan.address("BARAZA"), (5, 0, "BARAZA".into()));
        assert_eq!(plan.address("20880"), (3, 0, "20880".into()));
        assert_eq!(plan.address("254711000001"), (0, 1, "254711000001".into()));
    }

    #[test]
    fn statuses_by_name_or_number() {
        assert_eq!(
            parse_status("ESME_RSYSERR"),
            Ok(CommandStatus::ESME_RSYSERR)
        );
        assert_eq!(parse_status("rx_t_appn"), Ok(CommandStatus::ESME_RX_T_APPN));
        assert_eq!(parse_status("0x45"), Ok(CommandStatus::ESME_RSUBMITFAIL));
        assert_eq!(parse_status("1024"), Ok(CommandStatus(0x400)));
        assert!(parse_status("ESME_NOPE").is_err());
        let list = TemporaryErrors::default();
        assert_eq!(
            list.classify(CommandStatus::ESME_RSYSERR),
            StatusClass::Temporary
        );
        assert_eq!(
            list.classify(CommandStatus::ESME_RX_P_APPN),
            StatusClass::Permanent
        );
        assert_eq!(
            TemporaryErrors::new([]).classify(CommandStatus::ESME_RMSGQFUL),
            StatusClass::Throttling
        );
    }

    #[test]
    fn retry_delays_double_up_to_the_ceiling() {
        let policy = RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(100),
            ceiling: Duration::from_millis(350),
        };
        let delays: Vec<u128> = (1..=4).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }
}
