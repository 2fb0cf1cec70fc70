//! Twilio outbound calls (and compatible APIs): `POST {api_url}/2010-04-01/Accounts/{sid}/Calls.json`
//! with HTTP basic auth (account SID, auth token) and the form fields `To`, `From`,
//! `Url={public_url}/voice/twiml` (where the answered call asks for TwiML; the flow is found
//! by call id, noted by the dialer),
//! `StatusCallback={public_url}/voice/twiml/status` and `StatusCallbackEvent=completed` (the
//! final status, whatever it is: completed, busy, no-answer, failed, canceled). The JSON
//! answer's `sid` is the call id later callbacks carry (`CallSid`).
//!
//! It never logs the auth token, and never retries on its own (the dialer decides).

use super::{HttpEndpoint, base64};

/// One Twilio account's call API.
#[derive(Clone)]
pub(crate) struct Client {
    /// Where `POST .../Calls.json` goes.
    pub(crate) endpoint: HttpEndpoint,
    /// The account SID (basic-auth user).
    pub(crate) account_sid: String,
    /// The auth token (basic-auth password); never logged.
    pub(crate) auth_token: String,
    /// Our number (form field `From`).
    pub(crate) from: String,
    /// This gateway's public base URL, for `Url` and `StatusCallback`.
    pub(crate) public_url: String,
    /// `token=...` when TwiML callbacks need the shared token (`callbacks.twilio.token`).
    pub(crate) callback_query: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("twilio::Client")
            .field("endpoint", &self.endpoint)
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Asks Twilio to call `to`; returns the call SID.
    pub(crate) async fn place(&self, to: &str) -> Result<String, String> {
        let authorization = format!(
            "Basic {}",
            base64(format!("{}:{}", self.account_sid, self.auth_token).as_bytes())
        );
        let query = self
            .callback_query
            .as_ref()
            .map_or_else(String::new, |q| format!("?{q}"));
        let url = format!("{}/voice/twiml{query}", self.public_url);
        let status_callback = format!("{}/voice/twiml/status{query}", self.public_url);
        let (status, body) = self
            .endpoint
            .post_form(
                &[("authorization", authorization.as_str())],
                &[
                    ("To", to),
                    ("From", self.from.as_str()),
                    ("Url", url.as_str()),
                    ("StatusCallback", status_callback.as_str()),
                    ("StatusCallbackEvent", "completed"),
                ],
            )
            .await?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(format!("Twilio answered HTTP {status}: {}", clip(&text)));
        }
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("Twilio answer is not JSON ({e}): {}", clip(&text)))?;
        json.get("sid")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("Twilio answer has no sid: {}", clip(&text)))
    }
}

/// A provider answer cut for a log line.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
