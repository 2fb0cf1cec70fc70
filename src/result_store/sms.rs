//! The stored side of outbound SMS: a message accepted for sending, its state as it goes
//! through the SMSC, what became of each part, and the delivery receipts that come back.
//!
//! These are plain records written through the same group-committed writer as the answers
//! (so a message is durable before it is submitted, at the cost of sharing a flush) and read
//! back on connections of their own. This module never talks to an SMSC and never decides
//! what to send: that is `sms::outbox`. Receipt ids are stored already normalised with the
//! operator's rules, so matching is a plain join.

/// Where an outbound message stands. Only `Queued` and `Sending` are unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmsState {
    /// Stored, not yet handed to a bind.
    Queued,
    /// Handed to a bind: parts may have been written. If the node stops now, the outcome is
    /// unknown and the message is not sent again.
    Sending,
    /// Every part was accepted by the SMSC (delivery receipts may follow).
    Accepted,
    /// The SMSC refused a part (the rest were not sent).
    Rejected,
    /// A part was written but no answer came (timeout, lost connection, node stopped): it may
    /// or may not reach the handset, so it is never resent automatically.
    Unknown,
    /// Nothing could be sent (no bind for the number, the text cannot be encoded...).
    NotSent,
    /// The number opted out (STOP) before the message left.
    Suppressed,
}

impl SmsState {
    /// Every state, in declaration order.
    pub const ALL: [SmsState; 7] = [
        SmsState::Queued,
        SmsState::Sending,
        SmsState::Accepted,
        SmsState::Rejected,
        SmsState::Unknown,
        SmsState::NotSent,
        SmsState::Suppressed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SmsState::Queued => "queued",
            SmsState::Sending => "sending",
            SmsState::Accepted => "accepted",
            SmsState::Rejected => "rejected",
            SmsState::Unknown => "unknown",
            SmsState::NotSent => "not_sent",
            SmsState::Suppressed => "suppressed",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<SmsState> {
        SmsState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the message is done with (no further state change but receipts).
    pub fn is_final(self) -> bool {
        !matches!(self, SmsState::Queued | SmsState::Sending)
    }
}

impl std::fmt::Display for SmsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message accepted for sending (the row is written before any submit_sm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedSms {
    /// The gateway's own id (what the API returns and the status query takes).
    pub message_id: String,
    /// The gateway node that owns it: only that node sends it, and after a restart that node
    /// recovers it (so several nodes sharing one database never send a message twice).
    pub node: String,
    /// The operator whose binds carry it.
    pub operator: String,
    /// Destination number, in the gateway's number form.
    pub recipient: String,
    /// Sender shown on the handset.
    pub sender: String,
    /// The text (split into parts when it is submitted).
    pub body: String,
    /// Why it is sent (`reply`, `reminder`, `confirmation`, `api`), for reports.
    pub purpose: String,
    /// When it was accepted, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// A change of an unfinished message's state. Applied only while the stored state is
/// `queued` or `sending`, so a late or repeated update never undoes a final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsStateUpdate {
    /// The message.
    pub message_id: String,
    /// The new state.
    pub state: SmsState,
    /// Why (an SMSC status, a reason), when there is something to say.
    pub detail: Option<String>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// What became of one part at submit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPartRecord {
    /// The message.
    pub message_id: String,
    /// 1-based part number.
    pub part: u32,
    /// `accepted`, `rejected`, `unknown` or `not_sent`.
    pub outcome: &'static str,
    /// The SMSC's id for the part, normalised with the operator's rules (accepted parts).
    pub smsc_id: Option<String>,
    /// The SMSC status or the reason, when not accepted.
    pub detail: Option<String>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// A delivery receipt as stored: the latest per (operator, SMSC id), final states sticky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    /// The operator whose bind delivered it (any of its binds).
    pub operator: String,
    /// The SMSC id, normalised with the operator's rules.
    pub smsc_id: String,
    /// `delivered`, `undeliverable`, `expired`, ... (lower-case receipt state).
    pub state: String,
    /// The error code when the receipt carries one.
    pub error: Option<String>,
    /// Whether the state is final (a later intermediate receipt does not replace it).
    pub is_final: bool,
    /// When it arrived, ms since the Unix epoch.
    pub received_at_ms: i64,
}

/// One part of a stored message with its receipt, as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SmsPartRow {
    /// 1-based part number.
    pub part: u32,
    /// See [`SmsPartRecord::outcome`].
    pub outcome: String,
    /// The normalised SMSC id.
    pub smsc_id: Option<String>,
    /// See [`SmsPartRecord::detail`].
    pub detail: Option<String>,
    /// The latest receipt's state for this part, if one came.
    pub receipt: Option<String>,
    /// The receipt's error code.
    pub receipt_error: Option<String>,
    /// When the receipt arrived.
    pub receipt_at_ms: Option<i64>,
}

/// A stored message with its parts and receipts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SmsRow {
    pub message_id: String,
    pub node: String,
    pub operator: String,
    /// The raw number (pseudonymise before showing it outside the operator's tools).
    pub recipient: String,
    pub sender: String,
    pub body: String,
    pub purpose: String,
    /// The stored state name (see [`SmsState`]).
    pub state: String,
    pub detail: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// In part order; empty until the message was submitted.
    pub parts: Vec<SmsPartRow>,
}

impl SmsRow {
    /// The message's delivery as far as receipts tell: `delivered` when every part has a
    /// `delivered` receipt, the first other final receipt state when a part failed, `pending`
    /// otherwise (accepted, receipts outstanding), `None` when it was never accepted.
    pub fn delivery(&self) -> Option<&str> {
        if self.state != SmsState::Accepted.as_str() || self.parts.is_empty() {
            return None;
        }
        if self
            .parts
            .iter()
            .all(|p| p.receipt.as_deref() == Some("delivered"))
        {
            return Some("delivered");
        }
        if let Some(failed) = self
            .parts
            .iter()
            .filter_map(|p| p.receipt.as_deref())
            .find(|r| !matches!(*r, "delivered" | "enroute" | "accepted" | "unknown"))
        {
            return Some(failed);
        }
        Some("pending")
    }
}

/// An inbound SMS, kept before the SMSC is told it arrived (its deliver_sm_resp), so that an
/// acknowledged message is handled even if the node stops first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    /// The gateway's own id (node, time, sequence).
    pub inbound_id: String,
    /// The node that took it: that node handles it, or recovers it after a restart.
    pub node: String,
    /// The operator whose bind delivered it.
    pub operator: String,
    /// The citizen's number, in the gateway's number form.
    pub sender: String,
    /// The number or short code it was sent to.
    pub recipient: String,
    /// The text, parts reassembled.
    pub body: String,
    /// When it arrived, ms since the Unix epoch.
    pub received_at_ms: i64,
}

/// What became of a kept inbound SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundChange {
    /// Its step ran (its answers, if any, are committed with this change).
    Handled,
    /// Its step's commit marked it handled, but the step's session was never saved: it is
    /// to be handled again (by the sweep), from the session as stored.
    Unhandled,
    /// The SMSC was told ESME_RX_T_APPN although the message was kept (`true`: its copy
    /// will come again and must not be handled twice), or that copy came (`false`).
    RedeliveryExpected(bool),
}

/// A change to a kept inbound SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundUpdate {
    pub inbound_id: String,
    pub change: InboundChange,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

impl InboundUpdate {
    /// The statement parameters: (the new state when it changes, redelivery_expected when
    /// it changes).
    pub(crate) fn params(&self) -> (Option<&'static str>, Option<bool>) {
        match self.change {
            InboundChange::Handled => (Some("handled"), None),
            InboundChange::Unhandled => (Some("received"), None),
            InboundChange::RedeliveryExpected(expected) => (None, Some(expected)),
        }
    }
}

/// Columns of `sms_inbound` in the order the readers expect.
pub(crate) const INBOUND_COLUMNS: &str =
    "inbound_id, node, operator, sender, recipient, body, received_at_ms";

/// Which messages to read back.
#[derive(Debug, Clone)]
pub(crate) enum SmsQuery {
    /// These message ids.
    Ids(Vec<String>),
    /// The node's `queued` and `sending` messages, oldest first.
    Unfinished(String),
}

/// Columns of `sms_messages` in the order the readers expect.
pub(crate) const MESSAGE_COLUMNS: &str = "message_id, node, operator, recipient, sender, body, \
     purpose, state, detail, created_at_ms, updated_at_ms";

/// Parts with their receipts; the receipt joins on the message's operator and the part's
/// normalised SMSC id.
pub(crate) const PART_COLUMNS: &str = "p.message_id, p.part, p.outcome, p.smsc_id, p.detail, \
     r.state, r.error, r.received_at_ms";

/// A stored state word, checked.
pub(crate) fn stored_sms_state(
    message_id: &str,
    stored: &str,
) -> Result<(), super::ResultStoreError> {
    SmsState::parse(stored).map(|_| ()).ok_or_else(|| {
        super::ResultStoreError::Corrupt(format!(
            "message {message_id} has unknown state `{stored}`"
        ))
    })
}
