//! The operator binds `baraza serve` keeps open: the configured ESME sessions of every operator,
//! started beside the HTTP server, unbound on shutdown.
//!
//! A mobile-originated message is kept in the result store (`sms_inbound`) before the SMSC is
//! told it arrived, then goes to `Gateway::sms_step` (keywords, stop/start, the open SMS
//! session), which marks it handled in the commit of its answers; its replies go through the
//! outbound queue ([`Outbox`]) on the same operator. A store failure answers ESME_RX_T_APPN
//! (the SMSC delivers it again); a message kept but refused that way (the store answered too
//! late) is flagged, so its redelivery is acknowledged and not handled twice; messages a node
//! kept but never handled (it stopped) are handled at its next start or sweep. Receipts are
//! stored before they are acknowledged too; a USSD dialogue message (deliver_sm with
//! `ussd_service_op`) goes, read through the operator's USSD profile, to `Gateway::ussd_step`
//! and the screen goes back as a submit_sm on the same bind (a screen is never queued: late,
//! it is useless).
//! Never reads or writes sessions itself.

use std::time::Duration;

use metrics::{counter, gauge};
use tracing::{info, warn};

use std::sync::Arc;

use crate::channels::ussd::smpp::{read_deliver, render_submit};
use crate::config::OperatorConfig;
use crate::dispatcher::Gateway;
use crate::result_store::{InboundChange, InboundSms, InboundUpdate, Write};
use crate::smpp::ShortMessage;
use crate::smpp::esme::{
    Ack, BindType, Delivery, Esme, EsmeHandle, Inbound, SubmitOutcome, TpsLimiter,
};
use crate::sms::outbox::{NewSms, Outbox};

/// Inbound messages being kept right now on this node, by what they carry (operator,
/// sender, recipient, text). A copy that arrives while its twin is still being kept (the SMSC
/// redelivers a message the bind refused because the store was slow) is refused again instead
/// of being kept a second time: two copies kept at once would both be handled.
#[derive(Default)]
struct Keeping(std::sync::Mutex<std::collections::HashSet<(String, String, String, String)>>);

/// Held while one inbound message is being kept; lets its twin in when dropped.
struct KeepingGuard<'a> {
    set: &'a Keeping,
    key: (String, String, String, String),
}

impl Keeping {
    fn start(&self, message: &InboundSms) -> Option<KeepingGuard<'_>> {
        let key = (
            message.operator.clone(),
            message.sender.clone(),
            message.recipient.clone(),
            message.body.clone(),
        );
        let inserted = {
            let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
            set.insert(key.clone())
        };
        // Built only when inserted: a guard dropped here would remove its twin's key.
        inserted.then(|| KeepingGuard { set: self, key })
    }
}

impl Drop for KeepingGuard<'_> {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}

/// The open binds, by operator name, and the outbound queue that sends through them.
pub struct Binds {
    binds: Vec<(String, EsmeHandle)>,
    outbox: Arc<Outbox>,
}

impl Binds {
    /// Starts the configured binds of every operator (`binds` of its kind plus
    /// `receiver_binds`; each connects and reconnects on its own), the outbound queue over
    /// them, and a task per bind that handles what arrives on it. Call
    /// [`Outbox::recover`] (through [`Binds::outbox`]) once to send what a previous run left.
    pub fn start(gateway: Arc<Gateway>) -> Binds {
        let mut binds = Vec::new();
        let mut inbound_queues = Vec::new();
        for operator in &gateway.config.smpp.operators {
            let kinds = std::iter::repeat_n(operator.bind, operator.binds.max(1)).chain(
                std::iter::repeat_n(BindType::Receiver, operator.receiver_binds),
            );
            // One limiter for all of the operator's binds: its TPS is per account.
            let limiter = operator.tps.map(|tps| Arc::new(TpsLimiter::new(tps)));
            for kind in kinds {
                let mut config = operator.bind_config();
                config.bind_type = kind;
                let (handle, inbound) = Esme::start_with_limiter(config, limiter.clone());
                binds.push((operator.name.clone(), handle));
                inbound_queues.push(inbound);
            }
        }
        let outbox = Arc::new(Outbox::new(Arc::clone(&gateway), &binds));
        let keeping = Arc::new(Keeping::default());
        for ((name, handle), inbound) in binds.iter().zip(inbound_queues) {
            let Some(operator) = gateway
                .config
                .smpp
                .operators
                .iter()
                .find(|o| &o.name == name)
                .cloned()
            else {
                continue;
            };
            // USSD screens go back on the bind the dialogue came in on, or, on a receiver
            // bind, on the operator's first bind that can send.
            let screens = if handle.can_submit() {
                Some(handle.clone())
            } else {
                binds
                    .iter()
                    .find(|(n, h)| n == name && h.can_submit())
                    .map(|(_, h)| h.clone())
            };
            tokio::spawn(handle_inbound(
                Arc::clone(&gateway),
                operator,
                Arc::clone(&outbox),
                Arc::clone(&keeping),
                screens,
                inbound,
            ));
        }
        let binds = Binds { binds, outbox };
        if !binds.binds.is_empty() {
            let handles = binds.binds.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    export_metrics(&handles);
                }
            });
        }
        binds
    }

    /// The outbound queue over these binds.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Fires the SMS timers due at `now_ms` (reminders, timeouts): each reminder is stored in
    /// its timer step's own commit, routed by the number's prefix, then submitted.
    pub async fn send_due_reminders(&self, now_ms: i64) {
        let outbox = &self.outbox;
        let next_id = || outbox.next_message_id();
        let via = |to: &str| outbox.route_for(to);
        let route = crate::dispatcher::ReplyRoute {
            node: outbox.node(),
            via: &via,
            next_id: &next_id,
        };
        let fired = outbox.gateway().sms_due_routed(now_ms, Some(&route)).await;
        outbox.send_stored(fired.stored);
        for message in fired.to_queue {
            self.send(message).await;
        }
    }

    /// Queues a gateway-initiated message (an SMS reminder): routed by the number's prefix
    /// (`prefixes` of each operator), from that operator's sender.
    pub async fn send(&self, message: crate::dispatcher::OutgoingSms) {
        let sms = NewSms {
            operator: None,
            to: message.to,
            from: None,
            text: message.text,
            purpose: message.purpose.to_string(),
        };
        if let Err(e) = self.outbox.enqueue(vec![sms]).await {
            warn!(error = %e, "reminder not queued");
        }
    }

    /// Names of the operators with a bind (once per bind).
    pub fn operators(&self) -> Vec<&str> {
        self.binds.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Waits (up to `limit`) for outbound messages in flight, then sends unbind on every
    /// bind and waits (bounded by each bind's response timeout).
    pub async fn shutdown(&self, limit: Duration) {
        self.outbox.drain(limit).await;
        for (name, handle) in &self.binds {
            if !handle.unbind().await {
                warn!(operator = %name, "no unbind_resp before shutdown");
            }
        }
    }
}

/// Handles what one bind delivers: mobile-originated SMS through `Gateway::sms_step` (replies
/// queued on the same operator), USSD dialogue messages, and receipts (stored).
async fn handle_inbound(
    gateway: Arc<Gateway>,
    operator: OperatorConfig,
    outbox: Arc<Outbox>,
    keeping: Arc<Keeping>,
    screens: Option<EsmeHandle>,
    mut inbound: tokio::sync::mpsc::Receiver<Delivery>,
) {
    let name = operator.name.clone();
    while let Some(Delivery { message, ack }) = inbound.recv().await {
        match message {
            Inbound::Ussd(sm) => {
                counter!("baraza_smpp_ussd_inbound_total", "operator" => name.clone()).increment(1);
                match &screens {
                    // Awaited here, not spawned: the dialogue's record is read and updated in
                    // the order the messages arrived (an abort, then a late answer, must not
                    // swap); the step itself runs on a task of its own.
                    Some(screens) => ussd_message(&gateway, &operator, screens, *sm, ack).await,
                    None => warn!(operator = %name, "USSD deliver_sm but no bind can answer it"),
                }
            }
            Inbound::Receipt(receipt) => {
                let state = format!("{:?}", receipt.state).to_lowercase();
                counter!("baraza_smpp_receipts_total", "operator" => name.clone(), "state" => state)
                    .increment(1);
                info!(operator = %name, message_id = %receipt.message_id, state = ?receipt.state, "delivery receipt");
                let outbox = Arc::clone(&outbox);
                let name = name.clone();
                tokio::spawn(async move {
                    if outbox.record_receipt(&name, &receipt).await {
                        ack.stored();
                    } else {
                        ack.failed();
                    }
                });
            }
            Inbound::Deliver {
                from,
                to,
                text,
                complete,
                ..
            } => {
                counter!("baraza_smpp_inbound_total", "operator" => name.clone()).increment(1);
                if !complete {
                    warn!(operator = %name, from = %gateway.pseudonym(&from), "inbound SMS with missing parts: handled as received");
                }
                // One task per message: a slow store never blocks the bind.
                let message = InboundSms {
                    inbound_id: outbox.next_id(),
                    node: outbox.node().to_string(),
                    operator: name.clone(),
                    sender: crate::channels::normalise_msisdn(&from),
                    recipient: to,
                    body: text,
                    received_at_ms: crate::dispatcher::now_ms(),
                };
                tokio::spawn(keep_then_handle(
                    Arc::clone(&gateway),
                    operator.clone(),
                    Arc::clone(&outbox),
                    Arc::clone(&keeping),
                    message,
                    ack,
                ));
            }
        }
    }
}

/// Keeps an inbound SMS, tells the SMSC, then runs its step: the order that makes an
/// acknowledged message impossible to lose, and a refused one come again.
async fn keep_then_handle(
    gateway: Arc<Gateway>,
    operator: OperatorConfig,
    outbox: Arc<Outbox>,
    keeping: Arc<Keeping>,
    message: InboundSms,
    ack: Ack,
) {
    let name = operator.name.as_str();
    let now = crate::dispatcher::now_ms();
    let Some(kept_once) = keeping.start(&message) else {
        counter!("baraza_sms_inbound_total", "outcome" => "refused").increment(1);
        info!(operator = %name, "a copy of an inbound SMS still being kept: refused, delivered again later");
        ack.failed();
        return;
    };
    // The copy of a message kept earlier but refused (the store answered after the bind had
    // given up): the first is handled; this one only needs its acknowledgement.
    match gateway.results.sms_inbound_redelivered(&message).await {
        Ok(Some(kept)) => {
            let seen = Write::SmsInboundUpdate(InboundUpdate {
                inbound_id: kept,
                change: InboundChange::RedeliveryExpected(false),
                at_ms: now,
            });
            match gateway.results.commit(vec![seen]).await {
                Ok(()) => {
                    counter!("baraza_sms_inbound_total", "outcome" => "redelivery").increment(1);
                    ack.stored();
                }
                Err(e) => {
                    warn!(operator = %name, error = %e, "inbound SMS redelivery not recorded: refused again");
                    ack.failed();
                }
            }
            return;
        }
        Ok(None) => {}
        Err(e) => {
            warn!(operator = %name, error = %e, "inbound SMS not checked against redeliveries: refused, delivered again later");
            counter!("baraza_sms_inbound_total", "outcome" => "refused").increment(1);
            ack.failed();
            return;
        }
    }
    if let Err(e) = gateway
        .results
        .commit(vec![Write::SmsInbound(message.clone())])
        .await
    {
        warn!(operator = %name, error = %e, "inbound SMS not kept: refused, delivered again later");
        crate::telemetry::error("result_store");
        counter!("baraza_sms_inbound_total", "outcome" => "refused").increment(1);
        ack.failed();
        return;
    }
    if !ack.stored() {
        // Kept, but the SMSC heard ESME_RX_T_APPN: its copy will come, and must not count.
        let expected = Write::SmsInboundUpdate(InboundUpdate {
            inbound_id: message.inbound_id.clone(),
            change: InboundChange::RedeliveryExpected(true),
            at_ms: crate::dispatcher::now_ms(),
        });
        if let Err(e) = gateway.results.commit(vec![expected]).await {
            warn!(operator = %name, error = %e, "inbound SMS kept after its refusal, not flagged: its redelivery will be handled again");
        }
    }
    drop(kept_once);
    counter!("baraza_sms_inbound_total", "outcome" => "kept").increment(1);
    handle_kept(&gateway, &operator.name, &operator.sender, &outbox, message).await;
}

/// Runs the step of a kept inbound SMS (marked handled in the commit of its answers) and
/// queues its replies on the same route (`route_name`, whose configured sender is `sender`): an
/// SMPP operator or an HTTP route.
pub(crate) async fn handle_kept(
    gateway: &Gateway,
    route_name: &str,
    sender: &str,
    outbox: &Outbox,
    message: InboundSms,
) {
    // Replies leave from the number the citizen wrote to, unless the route has a fixed
    // sender.
    let reply_from = if sender.is_empty() {
        message.recipient.clone()
    } else {
        sender.to_string()
    };
    let handled = Write::SmsInboundUpdate(InboundUpdate {
        inbound_id: message.inbound_id.clone(),
        change: InboundChange::Handled,
        at_ms: crate::dispatcher::now_ms(),
    });
    let next_id = || outbox.next_message_id();
    let via = |_: &str| Some((route_name.to_string(), reply_from.clone()));
    let route = crate::dispatcher::ReplyRoute {
        node: outbox.node(),
        via: &via,
        next_id: &next_id,
    };
    let outcome = gateway
        .sms_step_marked(&message.sender, &message.body, Some(handled), Some(&route))
        .await;
    // Stored with the step's answers: only submitted from here.
    outbox.send_stored(outcome.stored);
    let confirmations: Vec<NewSms> = outcome
        .to_queue
        .into_iter()
        .map(|reply| NewSms {
            operator: Some(route_name.to_string()),
            to: reply.to,
            from: Some(reply_from.clone()),
            text: reply.text,
            purpose: reply.purpose.to_string(),
        })
        .collect();
    if let Err(e) = outbox.enqueue(confirmations).await {
        warn!(operator = %route_name, error = %e, "reply not queued");
    }
}

impl Binds {
    /// Handles the inbound SMS this node kept but never handled (it stopped between keeping
    /// one and running its step, or the step failed before its commit), received before
    /// `before_ms`, oldest first. Returns how many.
    pub async fn recover_inbound(&self, before_ms: i64) -> usize {
        let gateway = self.outbox.gateway();
        let kept = match gateway
            .results
            .sms_inbound_unhandled(self.outbox.node())
            .await
        {
            Ok(kept) => kept,
            Err(e) => {
                warn!(error = %e, "kept inbound SMS not read: retried at the next sweep");
                return 0;
            }
        };
        let mut handled = 0;
        for message in kept.into_iter().filter(|m| m.received_at_ms < before_ms) {
            let smpp = &gateway.config.smpp;
            let sender = smpp
                .operators
                .iter()
                .find(|o| o.name == message.operator)
                .map(|o| o.sender.clone())
                .or_else(|| {
                    smpp.http_routes
                        .iter()
                        .find(|r| r.name() == message.operator)
                        .map(|r| match r {
                            crate::config::SmsRouteConfig::AfricasTalking(at) => at.sender.clone(),
                        })
                });
            let Some(sender) = sender else {
                continue;
            };
            let route = message.operator.clone();
            handle_kept(gateway, &route, &sender, &self.outbox, message).await;
            handled += 1;
        }
        if handled > 0 {
            info!(handled, "inbound SMS kept before a stop handled");
        }
        handled
    }
}

/// How long a USSD screen may wait for the bind (networks release idle dialogues in tens of
/// seconds).
const USSD_SCREEN_DEADLINE: Duration = Duration::from_secs(20);

/// One USSD dialogue message: read through the operator's profile, its dialogue record
/// updated, then run by `Gateway::ussd_step` (same flows and session store as USSD over
/// HTTP) on its own task, and the screen submitted on the same bind. An abort ends the
/// session and sends nothing.
async fn ussd_message(
    gateway: &Arc<Gateway>,
    operator: &OperatorConfig,
    replies: &EsmeHandle,
    sm: ShortMessage,
    ack: Ack,
) {
    let name = operator.name.as_str();
    let Some(profile) = operator.ussd.clone() else {
        warn!(operator = %name, "USSD deliver_sm on a bind without a USSD profile: ignored");
        return;
    };
    let deliver = match read_deliver(&profile, &sm) {
        Ok(deliver) => deliver,
        Err(e) => {
            warn!(operator = %name, error = %e, "USSD deliver_sm not understood: ignored");
            return;
        }
    };
    let reply_from = if operator.sender.is_empty() {
        deliver.short_code.clone()
    } else {
        operator.sender.clone()
    };
    let gsm_coding = operator.bind_config().gsm_coding;
    let gateway = Arc::clone(gateway);
    let replies = replies.clone();
    let name = name.to_string();
    // The dialogue's record lives in the session store: any node's bind can continue it.
    // Acknowledged once the dialogue's record is stored: refused, the SMSC delivers it again.
    let request = match gateway.ussd_smpp_request(&name, &deliver, &profile).await {
        Ok(request) => {
            ack.stored();
            request
        }
        Err(e) => {
            warn!(operator = %name, error = %e, "USSD dialogue not found or stored: refused, no screen sent");
            crate::telemetry::error("session_store");
            ack.failed();
            return;
        }
    };
    tokio::spawn(async move {
        let aborted = matches!(request.input, crate::channels::ussd::UssdInput::End);
        let session_id = request.session_id.clone();
        let reply = gateway.ussd_step(request).await;
        if aborted {
            info!(operator = %name, op = deliver.op, "USSD dialogue ended by the network");
            return;
        }
        if reply.end {
            gateway.ussd_smpp_closed(&name, &deliver, &session_id).await;
        }
        let submit = match render_submit(&profile, &deliver, &reply_from, &reply, gsm_coding) {
            Ok(submit) => submit,
            Err(e) => {
                warn!(operator = %name, error = %e, "USSD screen not rendered");
                return;
            }
        };
        // A screen that cannot leave soon (bind down) is useless: the network will have
        // released the dialogue.
        match tokio::time::timeout(USSD_SCREEN_DEADLINE, replies.submit_short_message(submit)).await
        {
            Ok(Ok(SubmitOutcome::Accepted { .. })) => {}
            Ok(Ok(outcome)) => warn!(operator = %name, ?outcome, "USSD screen not accepted"),
            Ok(Err(e)) => warn!(operator = %name, error = %e, "USSD screen not sent"),
            Err(_) => warn!(operator = %name, "USSD screen not sent in time: given up"),
        }
    });
}

/// Per-bind counters as Prometheus gauges (they are totals kept by the bind itself).
fn export_metrics(binds: &[(String, EsmeHandle)]) {
    for (name, handle) in binds {
        let c = handle.counters();
        for (metric, value) in [
            ("baraza_smpp_submitted", c.submitted),
            ("baraza_smpp_acknowledged", c.acknowledged),
            ("baraza_smpp_throttled", c.throttled),
            ("baraza_smpp_failed", c.failed),
            ("baraza_smpp_window_in_use", c.window_in_use),
            ("baraza_smpp_receipts", c.receipts),
            ("baraza_smpp_reconnects", c.reconnects),
            ("baraza_smpp_retries", c.retries),
        ] {
            gauge!(metric, "operator" => name.clone()).set(value as f64);
        }
    }
}
