//! Africa's Talking SMS, both directions of its wire format, and the route that sends through
//! its HTTP API.
//!
//! - Sending: `POST {base_url}/version1/messaging`, a form with `username`, `to`, `message`,
//!   `from` (when a sender is set), `bulkSMSMode`, `enqueue` (when asked) and `linkId` (a
//!   reply to a premium short code); the API key goes in the `apiKey` header. The JSON answer
//!   lists each recipient under `SMSMessageData.Recipients[]` with `statusCode`, `status`,
//!   `messageId`, `cost` and `number`.
//! - Incoming messages: a form with `from`, `to`, `text`, `id`, `date`, `linkId`,
//!   `networkCode`.
//! - Delivery reports: a form with `id` (the `messageId` of the send), `status`,
//!   `failureReason`, `retryCount`, `phoneNumber`, `networkCode`.
//!
//! What an answer means for the queue is decided here ([`SendOutcome`]): accepted (with the
//! message id receipts join on), rejected (a 4xx, or a recipient status Africa's Talking gives
//! as a refusal), unknown (a timeout, a 5xx, an answer that cannot be read: the request may
//! have reached Africa's Talking, so it is never resent), throttled (429: not taken, the route
//! pauses), or not reached (the connection was never made: safe to send again).
//!
//! It never stores anything (the outbox does), never logs the API key, and sends one
//! recipient per request (the queue holds one row per message).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::channels::form::form_fields;
use crate::config::AtSmsRoute;
use crate::smpp::esme::TpsLimiter;

/// The path of the messaging API under the base URL.
const MESSAGING_PATH: &str = "/version1/messaging";

/// The longest pause a `Retry-After` may impose on a route (a larger value is clipped).
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What became of one send request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Africa's Talking took the message for the recipient.
    Accepted {
        /// `messageId`: delivery reports carry it as `id`.
        message_id: String,
        /// `status` as given (`Success`, `Sent`, `Queued`...).
        status: String,
        /// `cost` as given (`KES 0.8000`).
        cost: String,
    },
    /// Refused for good: a 4xx, or the recipient's status is a refusal.
    Rejected { detail: String },
    /// The request may have reached Africa's Talking and its answer is unknown: never resent.
    Unknown { detail: String },
    /// 429: not taken; the route pauses for `retry_after` (or its configured pause).
    Throttled {
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The request never left (no connection): safe to send again.
    NotReached { detail: String },
}

/// How the queue reads a recipient's `statusCode` in the send answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// 100 Processed, 101 Sent, 102 Queued.
    Taken,
    /// 401 RiskHold ... 409 DoNotDisturbRejection, 501 GatewayError, 502 RejectedByGateway.
    Refused,
    /// 500 InternalServerError and codes this gateway does not know: may or may not go out.
    Unclear,
}

/// The meaning of a recipient's `statusCode`.
pub fn recipient_status(code: i64) -> RecipientStatus {
    match code {
        100..=102 => RecipientStatus::Taken,
        401..=407 | 409 | 501 | 502 => RecipientStatus::Refused,
        _ => RecipientStatus::Unclear,
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest<'a> {
    /// The application user name.
    pub username: &'a str,
    /// The recipient, in international form.
    pub to: &'a str,
    /// The text.
    pub message: &'a str,
    /// The sender id or short code; empty: the account's default.
    pub from: &'a str,
    /// `bulkSMSMode` (1 or 0).
    pub bulk_sms_mode: bool,
    /// `enqueue=1` when set.
    pub enqueue: bool,
    /// The `linkId` of the incoming message a premium short code's reply answers.
    pub link_id: Option<&'a str>,
}

/// The form fields of a send request, in the order sent.
pub fn send_form<'a>(request: &SendRequest<'a>) -> Vec<(&'static str, &'a str)> {
    let mut form = vec![
        ("username", request.username),
        ("to", request.to),
        ("message", request.message),
    ];
    if !request.from.is_empty() {
        form.push(("from", request.from));
    }
    form.push(("bulkSMSMode", if request.bulk_sms_mode { "1" } else { "0" }));
    if request.enqueue {
        form.push(("enqueue", "1"));
    }
    if let Some(link_id) = request.link_id.filter(|l| !l.is_empty()) {
        form.push(("linkId", link_id));
    }
    form
}

/// What an HTTP answer to a send request means. `retry_after` is the `Retry-After` header,
/// if any.
pub fn read_answer(status: u16, retry_after: Option<&str>, body: &[u8]) -> SendOutcome {
    let text = String::from_utf8_lossy(body);
    match status {
        429 => SendOutcome::Throttled {
            retry_after: retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_PAUSE)),
            detail: format!("HTTP 429: {}", clip(&text)),
        },
        200..=299 => read_recipients(&text),
        400..=499 => SendOutcome::Rejected {
            detail: format!("HTTP {status}: {}", clip(&text)),
        },
        _ => SendOutcome::Unknown {
            detail: format!("HTTP {status} after the request was sent: {}", clip(&text)),
        },
    }
}

/// The first recipient of a 2xx answer's `SMSMessageData`.
fn read_recipients(text: &str) -> SendOutcome {
    let unknown = |why: String| SendOutcome::Unknown {
        detail: format!("{why}: {}", clip(text)),
    };
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(json) => json,
        Err(e) => return unknown(format!("answer is not JSON ({e})")),
    };
    let Some(data) = json.get("SMSMessageData") else {
        return unknown("answer has no SMSMessageData".into());
    };
    let recipients = data.get("Recipients").and_then(|r| r.as_array());
    let Some(recipient) = recipients.and_then(|r| r.first()) else {
        // No recipient was taken; `Message` says why (`InvalidSenderId`...).
        let message = data.get("Message").and_then(|m| m.as_str()).unwrap_or("");
        return SendOutcome::Rejected {
            detail: format!("no recipient taken: {}", clip(message)),
        };
    };
    let field = |name: &str| match recipient.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let status = field("status");
    let Some(code) = recipient.get("statusCode").and_then(|c| c.as_i64()) else {
        return unknown("recipient has no numeric statusCode".into());
    };
    match recipient_status(code) {
        RecipientStatus::Taken => {
            let message_id = field("messageId");
            if message_id.is_empty() || message_id.eq_ignore_ascii_case("none") {
                return unknown(format!(
                    "recipient taken ({code} {status}) without a messageId"
                ));
            }
            SendOutcome::Accepted {
                message_id,
                status,
                cost: field("cost"),
            }
        }
        RecipientStatus::Refused => SendOutcome::Rejected {
            detail: format!("{code} {}", clip(&status)),
        },
        RecipientStatus::Unclear => unknown(format!("recipient status {code} {status}")),
    }
}

/// Why a callback was not understood (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadCallback(pub String);

/// An incoming message (the SMS callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The citizen's number.
    pub from: String,
    /// The short code or number written to.
    pub to: String,
    /// The text (may be empty).
    pub text: String,
    /// Africa's Talking's id of the message: the same on a retried callback.
    pub id: String,
    /// When Africa's Talking received it, as given.
    pub date: String,
    /// Set for premium short codes: a reply must carry it back.
    pub link_id: Option<String>,
    /// The citizen's network.
    pub network_code: Option<String>,
}

/// A callback's form fields, read the way both callbacks read them.
struct CallbackFields(crate::channels::form::FormFields);

impl CallbackFields {
    fn read(body: &[u8]) -> Result<CallbackFields, BadCallback> {
        form_fields(body)
            .map(CallbackFields)
            .map_err(|e| BadCallback(e.0))
    }

    /// A field's value, trimmed; `None` when absent or blank.
    fn optional(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A field that must be there and not blank.
    fn required(&self, name: &str) -> Result<String, BadCallback> {
        self.optional(name)
            .ok_or_else(|| BadCallback(format!("missing field `{name}`")))
    }
}

/// Reads an incoming-message callback body.
pub fn parse_incoming(body: &[u8]) -> Result<Incoming, BadCallback> {
    let fields = CallbackFields::read(body)?;
    Ok(Incoming {
        from: fields.required("from")?,
        to: fields.required("to")?,
        text: fields.0.get("text").cloned().unwrap_or_default(),
        id: fields.required("id")?,
        date: fields.optional("date").unwrap_or_default(),
        link_id: fields.optional("linkId"),
        network_code: fields.optional("networkCode"),
    })
}

/// A delivery report's `status`: the full set Africa's Talking documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Sent to the network (intermediate).
    Sent,
    /// Submitted to the operator (intermediate).
    Submitted,
    /// Queued by the operator, the phone unreachable for now (intermediate).
    Buffered,
    /// Refused by the network (final).
    Rejected,
    /// Delivered to the phone (final).
    Success,
    /// Not delivered (final; `failureReason` says why).
    Failed,
    /// The phone was off or out of coverage until the message gave up (final).
    AbsentSubscriber,
    /// Not delivered within its validity (final).
    Expired,
}

impl DeliveryStatus {
    /// Every status, for tables and tests.
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Sent,
        DeliveryStatus::Submitted,
        DeliveryStatus::Buffered,
        DeliveryStatus::Rejected,
        DeliveryStatus::Success,
        DeliveryStatus::Failed,
        DeliveryStatus::AbsentSubscriber,
        DeliveryStatus::Expired,
    ];

    /// The status as Africa's Talking writes it.
    pub fn wire(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "Sent",
            DeliveryStatus::Submitted => "Submitted",
            DeliveryStatus::Buffered => "Buffered",
            DeliveryStatus::Rejected => "Rejected",
            DeliveryStatus::Success => "Success",
            DeliveryStatus::Failed => "Failed",
            DeliveryStatus::AbsentSubscriber => "AbsentSubscriber",
            DeliveryStatus::Expired => "Expired",
        }
    }

    /// Reads a `status` value (case-insensitively).
    pub fn parse(word: &str) -> Option<DeliveryStatus> {
        let word = word.trim();
        DeliveryStatus::ALL
            .into_iter()
            .find(|s| s.wire().eq_ignore_ascii_case(word))
    }

    /// The stored receipt state, in the words SMPP receipts use where they mean the same.
    pub fn receipt_state(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Submitted => "enroute",
            DeliveryStatus::Buffered => "buffered",
            DeliveryStatus::Rejected => "rejected",
            DeliveryStatus::Success => "delivered",
            DeliveryStatus::Failed => "undeliverable",
            DeliveryStatus::AbsentSubscriber => "absent_subscriber",
            DeliveryStatus::Expired => "expired",
        }
    }

    /// Whether no later report replaces it.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryStatus::Sent | DeliveryStatus::Submitted | DeliveryStatus::Buffered
        )
    }
}

/// A delivery report (the delivery callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The `messageId` the send answer gave.
    pub id: String,
    pub status: DeliveryStatus,
    /// Why a `Failed` or `Rejected` message was not delivered (`UserInBlacklist`...).
    pub failure_reason: Option<String>,
    /// How many times the network retried.
    pub retry_count: Option<u32>,
    /// The recipient's network.
    pub network_code: Option<String>,
}

/// Reads a delivery-report callback body.
pub fn parse_delivery(body: &[u8]) -> Result<DeliveryReport, BadCallback> {
    let fields = CallbackFields::read(body)?;
    let value = |name: &str| fields.optional(name);
    let id = fields.required("id")?;
    let word = fields.required("status")?;
    let status = DeliveryStatus::parse(&word)
        .ok_or_else(|| BadCallback(format!("unknown status `{}`", clip(&word))))?;
    let retry_count = match value("retryCount") {
        None => None,
        Some(count) => Some(count.parse::<u32>().map_err(|_| {
            BadCallback(format!("`retryCount` is not a count: `{}`", clip(&count)))
        })?),
    };
    Ok(DeliveryReport {
        id,
        status,
        failure_reason: value("failureReason"),
        retry_count,
        network_code: value("networkCode"),
    })
}

/// The stored error of a report: the failure reason and the retries, when given.
pub fn report_error(report: &DeliveryReport) -> Option<String> {
    match (&report.failure_reason, report.retry_count) {
        (None, None | Some(0)) => None,
        (Some(reason), None | Some(0)) => Some(reason.clone()),
        (None, Some(n)) => Some(format!("retries {n}")),
        (Some(reason), Some(n)) => Some(format!("{reason} (retries {n})")),
    }
}

/// One Africa's Talking SMS account as the queue sends through it: its HTTP client, its
/// rate limit, and the pause a 429 put on it.
pub struct Route {
    config: AtSmsRoute,
    /// Where `POST` goes: `{base_url}/version1/messaging`.
    url: String,
    /// Sent in the `apiKey` header; never logged.
    api_key: String,
    client: reqwest::Client,
    /// At most `rate_per_second` requests a second, for all the route's senders.
    limiter: TpsLimiter,
    /// No request before this instant (set by a 429).
    paused_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("africastalking::Route")
            .field("name", &self.config.name)
            .field("url", &self.url)
            .field("username", &self.config.username)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The route `config` describes; an error names what is wrong (a bad base URL).
    pub fn new(config: &AtSmsRoute) -> Result<Route, String> {
        let what = format!("smpp.http_routes `{}`", config.name);
        let base = reqwest::Url::parse(config.base_url.trim())
            .map_err(|e| format!("{what}: base_url is not a URL: {e}"))?;
        if !matches!(base.scheme(), "https" | "http") || base.host_str().is_none() {
            return Err(format!(
                "{what}: base_url must be https://HOST (or http:// for a local fake)"
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .build()
            .map_err(|e| format!("{what}: HTTP client: {e}"))?;
        Ok(Route {
            url: format!(
                "{}{MESSAGING_PATH}",
                config.base_url.trim().trim_end_matches('/')
            ),
            api_key: config.api_key().expose().to_string(),
            client,
            limiter: TpsLimiter::new(config.rate_per_second),
            paused_until: Mutex::new(None),
            config: config.clone(),
        })
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configured sender (may be empty).
    pub fn sender(&self) -> &str {
        &self.config.sender
    }

    /// The number prefixes it carries.
    pub fn prefixes(&self) -> &[String] {
        &self.config.prefixes
    }

    /// Sends one message, waiting for the route's pace; a 429 pauses the route and the
    /// message is tried again, up to `throttle_retries` times (then [`SendOutcome::Throttled`]
    /// is returned: it was never taken). Returns the outcome and how many 429s it met.
    pub async fn send(&self, to: &str, from: &str, text: &str) -> (SendOutcome, u32) {
        let mut throttled = 0;
        loop {
            self.wait_for_pace().await;
            let outcome = self.post(to, from, text).await;
            let SendOutcome::Throttled { retry_after, .. } = &outcome else {
                return (outcome, throttled);
            };
            throttled += 1;
            self.pause(retry_after.unwrap_or(Duration::from_millis(self.config.throttle_pause_ms)));
            if throttled > self.config.throttle_retries {
                return (outcome, throttled);
            }
        }
    }

    /// Waits out a pause, then for the next slot of the rate limit.
    async fn wait_for_pace(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        self.limiter.until_ready().await;
    }

    /// Holds every sender of the route back for `pause` (a later end wins).
    fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause.min(MAX_PAUSE);
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
        metrics::counter!("baraza_sms_throttled_total", "route" => self.config.name.clone())
            .increment(1);
    }

    /// One request and what its answer means.
    async fn post(&self, to: &str, from: &str, text: &str) -> SendOutcome {
        let request = SendRequest {
            username: &self.config.username,
            to,
            message: text,
            from,
            bulk_sms_mode: self.config.bulk_sms_mode,
            enqueue: self.config.enqueue,
            link_id: None,
        };
        let form = send_form(&request)
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::channels::form::encode(k),
                    crate::channels::form::encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let sent = self
            .client
            .post(&self.url)
            .header("apiKey", &self.api_key)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return transport_failure(e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match response.bytes().await {
            Ok(body) => read_answer(status, retry_after.as_deref(), &body),
            Err(e) => SendOutcome::Unknown {
                detail: format!("HTTP {status}, answer not read: {}", e.without_url()),
            },
        }
    }
}

/// A request that failed without an answer: before the connection was made it never left;
/// after, it may have reached Africa's Talking.
fn transport_failure(e: reqwest::Error) -> SendOutcome {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    // Errors name no URL (it is configuration, but it stays out of stored details).
    let why = e.without_url().to_string();
    if connect {
        SendOutcome::NotReached {
            detail: format!("no connection to Africa's Talking: {why}"),
        }
    } else if timeout {
        SendOutcome::Unknown {
            detail: "no answer from Africa's Talking in time: not resent".into(),
        }
    } else {
        SendOutcome::Unknown {
            detail: format!("request to Africa's Talking failed after it may have left: {why}"),
        }
    }
}

/// An answer or a value cut for a stored detail or a log line.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Checks every HTTP route of `config` (a name no operator or other route has, a user name,
/// a base URL) so a bad one stops the start with a clear message.
pub fn check_routes(config: &crate::config::Config) -> Result<(), String> {
    let mut names: Vec<&str> = config
        .smpp
        .operators
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    for route in &config.smpp.http_routes {
        let name = route.name();
        if name.trim().is_empty() || names.contains(&name) {
            return Err(format!(
                "smpp.http_routes: `{name}` must be a name no operator or other route has"
            ));
        }
        names.push(name);
        match route {
            crate::config::SmsRouteConfig::AfricasTalking(at) => {
                if at.username.trim().is_empty() {
                    return Err(format!("smpp.http_routes `{name}`: username is empty"));
                }
                Route::new(at)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(from: &'a str, link_id: Option<&'a str>, enqueue: bool) -> SendRequest<'a> {
        SendRequest {
            username: "baraza",
            to: "+254711000001",
            message: "Asante & karibu",
            from,
            bulk_sms_mode: link_id.is_none(),
            enqueue,
            link_id,
        }
    }

    #[test]
    fn send_forms_carry_the_documented_fields() {
        let cases: [(SendRequest, Vec<(&str, &str)>); 3] = [
            (
                request("", None, false),
                vec![
                    ("username", "baraza"),
                    ("to", "+254711000001"),
                    ("message", "Asante & karibu"),
                    ("bulkSMSMode", "1"),
                ],
            ),
            (
                request("BARAZA", None, true),
                vec![
                    ("username", "baraza"),
                    ("to", "+254711000001"),
                    ("message", "Asante & karibu"),
                    ("from", "BARAZA"),
                    ("bulkSMSMode", "1"),
                    ("enqueue", "1"),
                ],
            ),
            (
                request("22384", Some("SampleLinkId123"), false),
                vec![
                    ("username", "baraza"),
                    ("to", "+254711000001"),
                    ("message", "Asante & karibu"),
                    ("from", "22384"),
                    ("bulkSMSMode", "0"),
                    ("linkId", "SampleLinkId123"),
                ],
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(send_form(&request), expected);
        }
    }

    fn answer(code: i64, status: &str, id: &str) -> String {
        format!(
            r#"{{"SMSMessageData":{{"Message":"Sent to 1/1 Total Cost: KES 0.8000","Recipients":[{{"statusCode":{code},"number":"+254711000001","status":"{status}","cost":"KES 0.8000","messageId":"{id}"}}]}}}}"#
        )
    }

    #[test]
    fn every_recipient_status_code_is_mapped() {
        let table = [
            (100, "Processed", RecipientStatus::Taken),
            (101, "Sent", RecipientStatus::Taken),
            (102, "Queued", RecipientStatus::Taken),
            (401, "RiskHold", RecipientStatus::Refused),
            (402, "InvalidSenderId", RecipientStatus::Refused),
            (403, "InvalidPhoneNumber", RecipientStatus::Refused),
            (404, "UnsupportedNumberType", RecipientStatus::Refused),
            (405, "InsufficientBalance", RecipientStatus::Refused),
            (406, "UserInBlacklist", RecipientStatus::Refused),
            (407, "CouldNotRoute", RecipientStatus::Refused),
            (409, "DoNotDisturbRejection", RecipientStatus::Refused),
            (500, "InternalServerError", RecipientStatus::Unclear),
            (501, "GatewayError", RecipientStatus::Refused),
            (502, "RejectedByGateway", RecipientStatus::Refused),
            (999, "SomethingNew", RecipientStatus::Unclear),
        ];
        for (code, status, meaning) in table {
            assert_eq!(recipient_status(code), meaning, "{code} {status}");
            let outcome = read_answer(200, None, answer(code, status, "ATXid_1").as_bytes());
            match meaning {
                RecipientStatus::Taken => assert_eq!(
                    outcome,
                    SendOutcome::Accepted {
                        message_id: "ATXid_1".into(),
                        status: status.into(),
                        cost: "KES 0.8000".into(),
                    }
                ),
                RecipientStatus::Refused => assert!(
                    matches!(&outcome, SendOutcome::Rejected { detail } if detail.contains(status)),
                    "{code}: {outcome:?}"
                ),
                RecipientStatus::Unclear => assert!(
                    matches!(&outcome, SendOutcome::Unknown { detail } if detail.contains(status)),
                    "{code}: {outcome:?}"
                ),
            }
        }
    }

    #[test]
    fn http_statuses_and_odd_answers_are_classified() {
        let throttled = read_answer(429, Some("3"), b"Too many requests");
        assert_eq!(
            throttled,
            SendOutcome::Throttled {
                retry_after: Some(Duration::from_secs(3)),
                detail: "HTTP 429: Too many requests".into(),
            }
        );
        assert!(matches!(
            read_answer(429, Some("a while"), b""),
            SendOutcome::Throttled {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            read_answer(429, Some("86400"), b""),
            SendOutcome::Throttled { retry_after: Some(d), .. } if d == MAX_PAUSE
        ));
        let cases: [(u16, &[u8], &str); 8] = [
            (401, b"The supplied authentication is invalid", "rejected"),
            (400, b"Invalid phone number", "rejected"),
            (500, b"Internal Server Error", "unknown"),
            (503, b"", "unknown"),
            (200, b"<html>oops</html>", "unknown"),
            (200, br#"{"other":1}"#, "unknown"),
            (
                201,
                br#"{"SMSMessageData":{"Message":"InvalidSenderId","Recipients":[]}}"#,
                "rejected",
            ),
            (
                200,
                br#"{"SMSMessageData":{"Recipients":[{"statusCode":"101","messageId":"x"}]}}"#,
                "unknown",
            ),
        ];
        for (status, body, expected) in cases {
            let outcome = read_answer(status, None, body);
            let word = match outcome {
                SendOutcome::Rejected { .. } => "rejected",
                SendOutcome::Unknown { .. } => "unknown",
                _ => "other",
            };
            assert_eq!(word, expected, "HTTP {status}: {outcome:?}");
        }
        // Taken, but no id to join reports on: not known to be sent, never resent.
        assert!(matches!(
            read_answer(200, None, answer(101, "Success", "None").as_bytes()),
            SendOutcome::Unknown { .. }
        ));
    }

    #[test]
    fn incoming_messages_are_read_or_refused_clearly() {
        let body = b"from=%2B254711000001&to=22384&text=AFYA+1&id=abc-123&date=2026-12-07+10%3A00%3A00&linkId=LinkId1&networkCode=63902";
        assert_eq!(
            parse_incoming(body).expect("parsed"),
            Incoming {
                from: "+254711000001".into(),
                to: "22384".into(),
                text: "AFYA 1".into(),
                id: "abc-123".into(),
                date: "2026-12-07 10:00:00".into(),
                link_id: Some("LinkId1".into()),
                network_code: Some("63902".into()),
            }
        );
        let minimal = parse_incoming(b"from=%2B254711000001&to=22384&id=1").expect("parsed");
        assert_eq!((minimal.text.as_str(), minimal.link_id), ("", None));
        let refused: [(&[u8], &str); 5] = [
            (b"to=22384&text=hi&id=1", "missing field `from`"),
            (b"from=%2B254711000001&text=hi&id=1", "missing field `to`"),
            (
                b"from=%2B254711000001&to=22384&text=hi",
                "missing field `id`",
            ),
            (b"from=%ZZ&to=1&id=1", "field `from`"),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (body, message) in refused {
            let error = parse_incoming(body).expect_err("refused");
            assert!(error.0.contains(message), "{error} lacks {message}");
        }
    }

    #[test]
    fn every_delivery_status_is_mapped_and_reports_are_read() {
        let table = [
            ("Sent", "sent", false),
            ("Submitted", "enroute", false),
            ("Buffered", "buffered", false),
            ("Rejected", "rejected", true),
            ("Success", "delivered", true),
            ("Failed", "undeliverable", true),
            ("AbsentSubscriber", "absent_subscriber", true),
            ("Expired", "expired", true),
        ];
        assert_eq!(table.len(), DeliveryStatus::ALL.len());
        for (wire, stored, is_final) in table {
            let status = DeliveryStatus::parse(wire).expect(wire);
            assert_eq!(status.wire(), wire);
            assert_eq!(status.receipt_state(), stored);
            assert_eq!(status.is_final(), is_final, "{wire}");
            let body = format!(
                "id=ATXid_9&status={wire}&phoneNumber=%2B254711000001&networkCode=63902&failureReason=UserInBlacklist&retryCount=2"
            );
            let report = parse_delivery(body.as_bytes()).expect("parsed");
            assert_eq!(report.status, status);
            assert_eq!(report.id, "ATXid_9");
            assert_eq!(
                report_error(&report).as_deref(),
                Some("UserInBlacklist (retries 2)")
            );
        }
        assert_eq!(
            DeliveryStatus::parse("success"),
            Some(DeliveryStatus::Success)
        );
        let plain = parse_delivery(b"id=ATXid_9&status=Success").expect("parsed");
        assert_eq!(
            (
                plain.failure_reason.as_deref(),
                plain.retry_count,
                report_error(&plain)
            ),
            (None, None, None)
        );
        let refused: [(&[u8], &str); 4] = [
            (b"status=Success", "missing field `id`"),
            (b"id=1", "missing field `status`"),
            (b"id=1&status=Delivered", "unknown status `Delivered`"),
            (
                b"id=1&status=Failed&retryCount=many",
                "`retryCount` is not a count",
            ),
        ];
        for (body, message) in refused {
            let error = parse_delivery(body).expect_err("refused");
            assert!(error.0.contains(message), "{error} lacks {message}");
        }
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_route_named() {
        let route = |url: &str| -> AtSmsRoute {
            serde_saphyr::from_str(&format!(
                "name: at-ke\nusername: sandbox\nbase_url: \"{url}\"\n"
            ))
            .expect("route config")
        };
        for url in ["not a url", "ftp://api.africastalking.com", "mailto:x@y"] {
            let error = Route::new(&route(url)).expect_err(url);
            assert!(error.contains("`at-ke`"), "{error}");
        }
        let ok = Route::new(&route("https://api.sandbox.africastalking.com/")).expect("ok");
        assert_eq!(
            ok.url,
            "https://api.sandbox.africastalking.com/version1/messaging"
        );
        assert!(!format!("{ok:?}").contains("api_key"));
    }

    #[test]
    fn http_routes_parse_from_the_smpp_section() {
        let smpp: crate::config::SmppConfig = serde_saphyr::from_str(
            "http_routes:\n  - provider: africastalking\n    name: at-ke\n    username: sandbox\n    sender: \"22384\"\n    prefixes: [\"+254\"]\n",
        )
        .expect("parses");
        let crate::config::SmsRouteConfig::AfricasTalking(at) = &smpp.http_routes[0];
        assert_eq!(
            (at.name.as_str(), at.sender.as_str(), at.base_url.as_str()),
            ("at-ke", "22384", "https://api.africastalking.com")
        );
        assert_eq!(
            (at.rate_per_second, at.timeout_ms, at.bulk_sms_mode),
            (10, 10_000, true)
        );
        for bad in [
            "http_routes:\n  - provider: africastalking\n    name: a\n    username: u\n    colour: red\n",
            "http_routes:\n  - provider: pigeon\n    name: a\n    username: u\n",
            "http_routes:\n  - name: a\n    username: u\n",
        ] {
            assert!(
                serde_saphyr::from_str::<crate::config::SmppConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn routes_need_unique_names_and_a_user_name() {
        let mut config = crate::config::Config::embedded();
        let route = |name: &str, username: &str| {
            crate::config::SmsRouteConfig::AfricasTalking(
                serde_saphyr::from_str(&format!("name: {name}\nusername: \"{username}\"\n"))
                    .expect("route config"),
            )
        };
        config.smpp.http_routes = vec![route("at", "sandbox")];
        assert_eq!(check_routes(&config), Ok(()));
        config.smpp.http_routes = vec![route("at", "sandbox"), route("at", "other")];
        assert!(
            check_routes(&config)
                .unwrap_err()
                .contains("`at` must be a name")
        );
        config.smpp.http_routes = vec![route("at", " ")];
        assert!(
            check_routes(&config)
                .unwrap_err()
                .contains("username is empty")
        );
    }
}
