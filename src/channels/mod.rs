//! The edges: every wire format a citizen's message arrives in or leaves by.
//!
//! One folder per channel kind, one file per provider, each owning both directions of its
//! format (parse the callback, render the reply). Nothing here loads sessions or runs flows:
//! channels turn requests into `ussd::UssdRequest` and replies into bytes; the dispatcher does
//! the rest.

pub(crate) mod form;
pub mod ussd;
pub mod voice;

/// A phone number in one form whatever the transport, so a citizen is the same person over
/// USSD, SMS and voice (sessions, resume offers, opt-outs and exports key on it): `+` and the
/// digits for an international number (`254711000001` and `+254711000001` are the same);
/// anything else (a local `07...` number, a short code, a SIP address) as written.
pub fn normalise_msisdn(number: &str) -> String {
    let number = number.trim();
    let digits = number.strip_prefix('+').unwrap_or(number);
    let international = digits.len() >= 10
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if international {
        format!("+{digits}")
    } else {
        number.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_msisdn;

    #[test]
    fn international_numbers_get_one_form() {
        assert_eq!(normalise_msisdn("254711000001"), "+254711000001");
        assert_eq!(normalise_msisdn("+254711000001"), "+254711000001");
        assert_eq!(normalise_msisdn(" 233246912184 "), "+233246912184");
        assert_eq!(normalise_msisdn("0711000001"), "0711000001");
        assert_eq!(normalise_msisdn("20880"), "20880");
        assert_eq!(
            normalise_msisdn("sip:alice@example.org"),
            "sip:alice@example.org"
        );
    }
}
