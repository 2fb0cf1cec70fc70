//! The operator binds `baraza serve` keeps open: one ESME session per configured operator,
//! started beside the HTTP server, unbound on shutdown.
//!
//! A mobile-originated message goes to `Gateway::sms_step` (keywords, stop/start, the open SMS
//! session) and its replies go out on the same bind; a USSD dialogue message (deliver_sm with
//! `ussd_service_op`) goes, read through the operator's USSD profile, to `Gateway::ussd_step`
//! and the screen goes back as a submit_sm; receipts are logged and counted by state.
//! Never reads or writes sessions itself.

use std::time::Duration;

use metrics::{counter, gauge};
use tracing::{info, warn};

use std::sync::Arc;

use crate::channels::ussd::smpp::{Dialogues, read_deliver, render_submit};
use crate::config::OperatorConfig;
use crate::dispatcher::Gateway;
use crate::smpp::ShortMessage;
use crate::smpp::esme::{Esme, EsmeHandle, Inbound, SubmitOutcome, SubmitRequest};

/// The open binds, by operator name.
pub struct Binds {
    binds: Vec<(String, EsmeHandle)>,
}

impl Binds {
    /// Starts a bind per configured operator (each connects and reconnects on its own) and a
    /// task per bind that handles what arrives on it.
    pub fn start(gateway: Arc<Gateway>) -> Binds {
        let mut binds = Vec::new();
        for operator in &gateway.config.smpp.operators {
            let (handle, mut inbound) = Esme::start(operator.bind_config());
            let name = operator.name.clone();
            let sender = operator.sender.clone();
            let gateway = Arc::clone(&gateway);
            let replies = handle.clone();
            let operator_config = operator.clone();
            let dialogues = Arc::new(Dialogues::new(&operator.name));
            tokio::spawn(async move {
                while let Some(message) = inbound.recv().await {
                    match message {
                        Inbound::Ussd(sm) => {
                            counter!("baraza_smpp_ussd_inbound_total", "operator" => name.clone())
                                .increment(1);
                            ussd_message(&gateway, &operator_config, &replies, &dialogues, *sm);
                        }
                        Inbound::Receipt(receipt) => {
                            let state = format!("{:?}", receipt.state).to_lowercase();
                            counter!("baraza_smpp_receipts_total", "operator" => name.clone(), "state" => state)
                                .increment(1);
                            info!(operator = %name, message_id = %receipt.message_id, state = ?receipt.state, "delivery receipt");
                        }
                        Inbound::Deliver {
                            from,
                            to,
                            text,
                            complete,
                            ..
                        } => {
                            counter!("baraza_smpp_inbound_total", "operator" => name.clone())
                                .increment(1);
                            if !complete {
                                warn!(operator = %name, from = %gateway.pseudonym(&from), "inbound SMS with missing parts: handled as received");
                            }
                            // Replies leave from the number the citizen wrote to, unless the
                            // operator has a fixed sender.
                            let reply_from = if sender.is_empty() {
                                to
                            } else {
                                sender.clone()
                            };
                            // One task per message: a slow store never blocks the bind.
                            let gateway = Arc::clone(&gateway);
                            let replies = replies.clone();
                            let name = name.clone();
                            tokio::spawn(async move {
                                let from = crate::channels::normalise_msisdn(&from);
                                for message in gateway.sms_step(&from, &text).await {
                                    let request = SubmitRequest {
                                        to: message.to,
                                        from: reply_from.clone(),
                                        text: message.text,
                                        registered_delivery: true,
                                    };
                                    match replies.submit(request).await {
                                        Ok(parts)
                                            if parts.iter().all(|p| {
                                                matches!(p, SubmitOutcome::Accepted { .. })
                                            }) => {}
                                        Ok(parts) => {
                                            warn!(operator = %name, ?parts, "reply not fully accepted")
                                        }
                                        Err(e) => {
                                            warn!(operator = %name, error = %e, "reply not sent")
                                        }
                                    }
                                }
                            });
                        }
                    }
                }
            });
            binds.push((operator.name.clone(), handle));
        }
        let binds = Binds { binds };
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

    /// Sends a gateway-initiated message (an SMS reminder) on the first bind that can
    /// transmit, from its operator's sender. Reminders do not know which bind the citizen last
    /// wrote on; with several operators, route by number prefix here (not done yet).
    pub async fn send(&self, gateway: &Gateway, message: crate::dispatcher::OutgoingSms) {
        let Some((name, handle)) = self.binds.first() else {
            return;
        };
        let sender = gateway
            .config
            .smpp
            .operators
            .iter()
            .find(|o| &o.name == name)
            .map(|o| o.sender.clone())
            .unwrap_or_default();
        let request = SubmitRequest {
            to: message.to,
            from: sender,
            text: message.text,
            registered_delivery: true,
        };
        if let Err(e) = handle.submit(request).await {
            warn!(operator = %name, error = %e, "reminder not sent");
        }
    }

    /// Names of the operators with a bind.
    pub fn operators(&self) -> Vec<&str> {
        self.binds.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Sends unbind on every bind and waits (bounded by each bind's response timeout).
    pub async fn unbind_all(&self) {
        for (name, handle) in &self.binds {
            if !handle.unbind().await {
                warn!(operator = %name, "no unbind_resp before shutdown");
            }
        }
    }
}

/// How long a USSD screen may wait for the bind (networks release idle dialogues in tens of
/// seconds).
const USSD_SCREEN_DEADLINE: Duration = Duration::from_secs(20);

/// One USSD dialogue message: read through the operator's profile, run by
/// `Gateway::ussd_step` (same flows and session store as USSD over HTTP) on its own task, and
/// the screen submitted on the same bind. An abort ends the session and sends nothing.
fn ussd_message(
    gateway: &Arc<Gateway>,
    operator: &OperatorConfig,
    replies: &EsmeHandle,
    dialogues: &Arc<Dialogues>,
    sm: ShortMessage,
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
    let pseudonym = gateway.pseudonym(&deliver.subscriber);
    let request = dialogues.request(
        &deliver,
        &pseudonym,
        &profile,
        &gateway.config.ussd.service_codes,
    );
    let reply_from = if operator.sender.is_empty() {
        deliver.short_code.clone()
    } else {
        operator.sender.clone()
    };
    let gsm_coding = operator.bind_config().gsm_coding;
    let gateway = Arc::clone(gateway);
    let replies = replies.clone();
    let dialogues = Arc::clone(dialogues);
    let name = name.to_string();
    tokio::spawn(async move {
        let aborted = matches!(request.input, crate::channels::ussd::UssdInput::End);
        let session_id = request.session_id.clone();
        let reply = gateway.ussd_step(request).await;
        if aborted {
            info!(operator = %name, op = deliver.op, "USSD dialogue ended by the network");
            return;
        }
        if reply.end {
            dialogues.close(&deliver, &session_id);
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
        ] {
            gauge!(metric, "operator" => name.clone()).set(value as f64);
        }
    }
}
