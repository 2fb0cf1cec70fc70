//! `application/x-www-form-urlencoded` decoding, shared by the channels whose providers post
//! forms (Africa's Talking USSD and voice, TwiML). Decodes and reports; knows no field names.

use crate::channels::ussd::BadRequest;

/// The decoded fields of a form, in the order sent. A list, not a map: a callback carries a
/// handful of fields and each is read once or twice, so a scan is cheaper than hashing every
/// name on every step. Repeated names are all kept; [`FormFields::get`] answers the first.
#[derive(Debug, Default)]
pub(crate) struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// The value of the first field called `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&String> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
    }

    /// Every field as sent, repeated names included.
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Decodes an `application/x-www-form-urlencoded` body or query into its fields; the first
/// occurrence of a repeated name wins. Written here rather than pulling a crate: the format is
/// tiny and the errors should name what is wrong.
pub(crate) fn form_fields(body: &[u8]) -> Result<FormFields, BadRequest> {
    let text = std::str::from_utf8(body).map_err(|_| BadRequest("body is not UTF-8".into()))?;
    let mut fields = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let value =
            percent_decode(value).map_err(|e| BadRequest(format!("field `{name}`: {}", e.0)))?;
        fields.push((name, value));
    }
    Ok(FormFields(fields))
}

/// `application/x-www-form-urlencoded` encoding of one name or value (the inverse of the
/// decoder below), for the query strings the gateway writes into callback URLs.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(encoded: &str) -> Result<String, BadRequest> {
    let bytes = encoded.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        // Most names and many values need no decoding: copied whole, already valid UTF-8.
        return Ok(encoded.to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| BadRequest(format!("bad percent-encoding in `{encoded}`")))?;
                out.push(byte);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BadRequest(format!("`{encoded}` is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decode_and_the_first_of_a_repeated_name_wins() {
        let fields = form_fields(b"a=1&b=x+y%2Az&a=2&&c&d=%C3%A9").expect("a valid form");
        assert_eq!(fields.get("a").map(String::as_str), Some("1"));
        assert_eq!(fields.get("b").map(String::as_str), Some("x y*z"));
        assert_eq!(fields.get("c").map(String::as_str), Some(""));
        assert_eq!(fields.get("d").map(String::as_str), Some("é"));
        assert_eq!(fields.get("e"), None);
    }

    #[test]
    fn encoding_round_trips() {
        for text in ["plain", "a b&c=d", "é/+%", ""] {
            let form = format!("x={}", encode(text));
            let fields = form_fields(form.as_bytes()).expect("decodes");
            assert_eq!(fields.get("x").map(String::as_str), Some(text));
        }
    }

    #[test]
    fn bad_encodings_are_named() {
        let error = form_fields(b"text=%ZZ").expect_err("a bad escape");
        assert!(error.0.contains("field `text`"), "{}", error.0);
        assert!(form_fields(b"a=%FF").is_err(), "not UTF-8 once decoded");
        assert!(form_fields(&[0xFF]).is_err(), "not UTF-8");
    }
}
