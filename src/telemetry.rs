//! Metric names and logging setup in one place.
//!
//! Metrics go through the `metrics` facade to a Prometheus recorder rendered at `/metrics`.
//! Labels are low-cardinality by rule: channel, provider, outcome, kind. Never a phone number
//! or a session id as a label (those go, pseudonymised, into tracing spans).

use std::time::Duration;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::Channel;

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// One step handled, with its latency.
pub fn step(channel: Channel, provider: &'static str, outcome: &'static str, latency: Duration) {
    counter!("baraza_steps_total", "channel" => channel.as_str(), "provider" => provider, "outcome" => outcome).increment(1);
    histogram!("baraza_step_seconds", "channel" => channel.as_str()).record(latency.as_secs_f64());
}

/// Session lifecycle: started, completed, dropped, resumed, resume_offered, timed_out, failed.
pub fn session(event: &'static str) {
    counter!("baraza_sessions_total", "event" => event).increment(1);
}

/// A USSD step done from this node's copy of its session (`hit`), or a copy found stale by
/// the save (`stale`; the step was done again from the store).
pub fn session_cache(outcome: &'static str) {
    counter!("baraza_session_cache_total", "outcome" => outcome).increment(1);
}

/// An error, by kind (session_store, result_store, deadline, bad_request, ...).
pub fn error(kind: &'static str) {
    counter!("baraza_errors_total", "kind" => kind).increment(1);
}

/// A request refused by per-subscriber admission.
pub fn admission_refused() {
    counter!("baraza_admission_refused_total").increment(1);
}
