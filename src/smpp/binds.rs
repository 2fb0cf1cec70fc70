//! The operator binds `baraza serve` keeps open: one ESME session per configured operator,
//! started beside the HTTP server, unbound on shutdown.
//!
//! Inbound traffic is only logged and counted for now (receipts by state, mobile-originated
//! messages); routing messages into SMS flows is not built yet. Never reads or writes sessions.

use std::time::Duration;

use metrics::{counter, gauge};
use tracing::{info, warn};

use crate::config::SmppConfig;
use crate::smpp::esme::{Esme, EsmeHandle, Inbound};

/// The open binds, by operator name.
pub struct Binds {
    binds: Vec<(String, EsmeHandle)>,
}

impl Binds {
    /// Starts a bind per configured operator (each connects and reconnects on its own) and a
    /// task per bind that logs what arrives on it. `pseudonym` hides phone numbers in logs.
    pub fn start(
        config: &SmppConfig,
        pseudonym: impl Fn(&str) -> String + Send + Sync + Clone + 'static,
    ) -> Binds {
        let mut binds = Vec::new();
        for operator in &config.operators {
            let (handle, mut inbound) = Esme::start(operator.bind_config());
            let name = operator.name.clone();
            let pseudonym = pseudonym.clone();
            tokio::spawn(async move {
                while let Some(message) = inbound.recv().await {
                    match message {
                        Inbound::Receipt(receipt) => {
                            counter!("baraza_smpp_receipts_total", "operator" => name.clone(), "state" => format!("{:?}", receipt.state).to_lowercase()).increment(1);
                            info!(operator = %name, message_id = %receipt.message_id, state = ?receipt.state, "delivery receipt");
                        }
                        Inbound::Deliver {
                            from,
                            text,
                            complete,
                            ..
                        } => {
                            counter!("baraza_smpp_inbound_total", "operator" => name.clone())
                                .increment(1);
                            info!(operator = %name, from = %pseudonym(&from), chars = text.chars().count(), complete, "inbound SMS (not routed to a flow yet)");
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
