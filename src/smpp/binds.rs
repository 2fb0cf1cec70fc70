//! The operator binds `baraza serve` keeps open: one ESME session per configured operator,
//! started beside the HTTP server, unbound on shutdown.
//!
//! A mobile-originated message goes to `Gateway::sms_step` (keywords, stop/start, the open SMS
//! session) and its replies go out on the same bind; receipts are logged and counted by state.
//! Never reads or writes sessions itself.

use std::time::Duration;

use metrics::{counter, gauge};
use tracing::{info, warn};

use std::sync::Arc;

use crate::dispatcher::Gateway;
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
            tokio::spawn(async move {
                while let Some(message) = inbound.recv().await {
                    match message {
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
