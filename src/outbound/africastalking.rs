//! Africa's Talking Voice outbound calls: `POST {api_url}` with the form fields `username`,
//! `to`, `from` and the `apiKey` header; the answer is JSON whose `entries[0].sessionId` is
//! the call id later callbacks carry (`sessionId`). An entry status other than `Queued`, an
//! `errorMessage` other than `None`, or a non-2xx answer is a refusal.
//!
//! It never logs the API key, and never retries on its own (the dialer decides).

use super::HttpEndpoint;

/// One Africa's Talking account's call API.
#[derive(Clone)]
pub(crate) struct Client {
    /// Where `POST /call` goes.
    pub(crate) endpoint: HttpEndpoint,
    /// The application user name (form field `username`).
    pub(crate) username: String,
    /// Sent in the `apiKey` header; never logged.
    pub(crate) api_key: String,
    /// Our voice number (form field `from`).
    pub(crate) from: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("africastalking::Client")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Asks Africa's Talking to call `to`; returns the call's session id.
    pub(crate) async fn place(&self, to: &str) -> Result<String, String> {
        let (status, body) = self
            .endpoint
            .post_form(
                &[("apiKey", self.api_key.as_str())],
                &[
                    ("username", self.username.as_str()),
                    ("to", to),
                    ("from", self.from.as_str()),
                ],
            )
            .await?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(format!(
                "Africa's Talking answered HTTP {status}: {}",
                clip(&text)
            ));
        }
        parse_answer(&text)
    }
}

/// The call id in an answer to `POST /call`, or why there is none.
fn parse_answer(text: &str) -> Result<String, String> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("Africa's Talking answer is not JSON ({e}): {}", clip(text)))?;
    if let Some(message) = json.get("errorMessage").and_then(|m| m.as_str())
        && !message.eq_ignore_ascii_case("none")
        && !message.is_empty()
    {
        return Err(format!(
            "Africa's Talking refused the call: {}",
            clip(message)
        ));
    }
    let entry = json
        .get("entries")
        .and_then(|e| e.as_array())
        .and_then(|e| e.first())
        .ok_or_else(|| format!("Africa's Talking answer has no entries: {}", clip(text)))?;
    let status = entry.get("status").and_then(|s| s.as_str()).unwrap_or("");
    if !status.eq_ignore_ascii_case("queued") {
        return Err(format!(
            "Africa's Talking did not queue the call: status `{}`",
            clip(status)
        ));
    }
    entry
        .get("sessionId")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "Africa's Talking answer has no sessionId".to_string())
}

/// A provider answer cut for a log line.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn answers_give_the_session_id_or_the_reason() {
        let ok = r#"{"entries":[{"phoneNumber":"+254711000001","status":"Queued","sessionId":"ATVId_1"}],"errorMessage":"None"}"#;
        assert_eq!(parse_answer(ok), Ok("ATVId_1".to_string()));
        let refused = r#"{"entries":[],"errorMessage":"Invalid callerId"}"#;
        assert!(
            parse_answer(refused)
                .unwrap_err()
                .contains("Invalid callerId")
        );
        let bad_number = r#"{"entries":[{"phoneNumber":"x","status":"InvalidPhoneNumber","sessionId":"None"}],"errorMessage":"None"}"#;
        assert!(
            parse_answer(bad_number)
                .unwrap_err()
                .contains("InvalidPhoneNumber")
        );
        assert!(parse_answer("<html>").is_err());
    }
}
