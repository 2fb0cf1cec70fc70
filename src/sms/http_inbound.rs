//! What aggregators post over HTTP for their SMS routes: incoming messages and delivery
//! reports (Africa's Talking today), handled with the rules SMPP binds follow.
//!
//! An incoming message is kept in the result store (`sms_inbound`) before the callback is
//! answered 200 (a store failure is an error the route answers 5xx, so the provider posts it
//! again); its step then runs on a task of its own through `Gateway::sms_step_marked`, marked
//! handled in the commit of its answers, and its replies go back through the same route. A
//! message kept but never handled (the node stopped) is handled by
//! [`crate::sms::binds::Binds::recover_inbound`] like an SMPP one. A delivery report is stored
//! against the message it names (`sms_receipts`, joined on the route and the provider's id).
//!
//! Never parses a provider's format (its file does) and never authenticates (the server's
//! callback check did, before the body was read).

use std::sync::Arc;

use crate::config::SmsRouteConfig;
use crate::result_store::{InboundSms, ReceiptRecord, ResultStoreError, Write};
use crate::sms::africastalking::{DeliveryReport, Incoming, report_error};
use crate::sms::binds::handle_kept;
use crate::sms::outbox::Outbox;

/// What became of an incoming message that was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Kept now; its step runs.
    New,
    /// Kept by an earlier copy of the same callback: nothing more is done.
    Already,
}

/// Why a callback was not taken.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// No Africa's Talking route is configured (or none has the name asked for).
    #[error("no Africa's Talking SMS route {0}")]
    NoRoute(String),
    /// The store did not keep it: the provider should post it again.
    #[error("not stored: {0}")]
    Store(#[from] ResultStoreError),
    /// The delivery report was not stored (logged by the outbox): posted again later.
    #[error("the delivery report was not stored")]
    ReportNotStored,
}

/// The Africa's Talking route an incoming message to `to` belongs to: the one whose sender
/// is that short code, else the first. Returns (name, sender).
fn at_route_for(outbox: &Outbox, to: &str) -> Option<(String, String)> {
    let routes = || {
        outbox
            .gateway()
            .config
            .smpp
            .http_routes
            .iter()
            .map(|route| match route {
                SmsRouteConfig::AfricasTalking(at) => (at.name.clone(), at.sender.clone()),
            })
    };
    routes()
        .find(|(_, sender)| !sender.is_empty() && sender == to)
        .or_else(|| routes().next())
}

/// Keeps an incoming Africa's Talking message, then starts its step (the caller answers 200
/// once this returns `Ok`).
///
/// Its id in `sms_inbound` is derived from Africa's Talking's `id`, so a callback posted again
/// keeps one row (the store ignores the second insert).
pub async fn keep_incoming(outbox: &Arc<Outbox>, incoming: Incoming) -> Result<Kept, InboundError> {
    let (route, sender) = at_route_for(outbox, &incoming.to)
        .ok_or_else(|| InboundError::NoRoute("is configured".into()))?;
    let message = InboundSms {
        inbound_id: format!("{route}-at-{}", incoming.id),
        node: outbox.node().to_string(),
        operator: route.clone(),
        sender: crate::channels::normalise_msisdn(&incoming.from),
        recipient: incoming.to,
        body: incoming.text,
        received_at_ms: crate::dispatcher::now_ms(),
    };
    let unchanged = outbox
        .gateway()
        .results
        .commit_checked(vec![Write::SmsInbound(message.clone())])
        .await?;
    if !unchanged.is_empty() {
        // Posted again (our 200 was lost, or came late): the first copy is handled, or will
        // be by the recovery; handling this one too would answer the next question with it.
        metrics::counter!("baraza_sms_inbound_total", "outcome" => "repeat").increment(1);
        return Ok(Kept::Already);
    }
    metrics::counter!("baraza_sms_inbound_total", "outcome" => "kept").increment(1);
    let outbox = Arc::clone(outbox);
    tokio::spawn(async move {
        handle_kept(outbox.gateway(), &route, &sender, &outbox, message).await;
    });
    Ok(Kept::New)
}

/// Stores an Africa's Talking delivery report against its message, on the route named
/// `route` (the callback URL's `?route=`), or the first Africa's Talking route.
pub async fn record_delivery(
    outbox: &Outbox,
    route: Option<&str>,
    report: &DeliveryReport,
) -> Result<(), InboundError> {
    let name = outbox
        .gateway()
        .config
        .smpp
        .http_routes
        .iter()
        .map(|r| match r {
            SmsRouteConfig::AfricasTalking(at) => at.name.as_str(),
        })
        .find(|name| route.is_none_or(|wanted| wanted == *name))
        .ok_or_else(|| {
            InboundError::NoRoute(route.map_or("is configured".into(), |r| format!("`{r}`")))
        })?;
    let record = ReceiptRecord {
        operator: name.to_string(),
        smsc_id: report.id.clone(),
        state: report.status.receipt_state().to_string(),
        error: report_error(report),
        is_final: report.status.is_final(),
        received_at_ms: crate::dispatcher::now_ms(),
    };
    if outbox.record_report(record).await {
        Ok(())
    } else {
        Err(InboundError::ReportNotStored)
    }
}
