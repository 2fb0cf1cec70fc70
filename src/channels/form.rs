//! `application/x-www-form-urlencoded` decoding, shared by the channels whose providers post
//! forms (Africa's Talking USSD and voice, TwiML). Decodes and reports; knows no field names.

use std::collections::HashMap;

use crate::channels::ussd::BadRequest;

/// Decodes an `application/x-www-form-urlencoded` body or query into its fields; the first
/// occurrence of a repeated name wins. Written here rather than pulling a crate: the format is
/// tiny and the errors should name what is wrong.
pub(crate) fn form_fields(body: &[u8]) -> Result<HashMap<String, String>, BadRequest> {
    let text = std::str::from_utf8(body).map_err(|_| BadRequest("body is not UTF-8".into()))?;
    let mut fields = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let value =
            percent_decode(value).map_err(|e| BadRequest(format!("field `{name}`: {}", e.0)))?;
        fields.entry(name).or_insert(value);
    }
    Ok(fields)
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
