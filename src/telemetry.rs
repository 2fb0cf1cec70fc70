//! Metric names and logging setup in one place.
//!
//! Metrics go through the `metrics` facade to a Prometheus recorder rendered at `/metrics`.
//! Labels are low-cardinality by rule: channel, provider, outcome, kind. Never a phone number
//! or a session id as a label (those go, pseudonymised, into tracing spans).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};
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
                .inspect(|_| RECORDER_INSTALLED.store(true, Ordering::Release))
        })
        .clone()
}

/// Set once the Prometheus recorder is installed. Until then a metric handle is a no-op one,
/// which must not be kept in [`HANDLES`].
static RECORDER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Labels of one step's metrics (channel, provider, outcome): all `'static`, few in number.
type StepLabels = (&'static str, &'static str, &'static str);

/// Handles of the hot-path metrics, per worker thread, found by their labels. Looking a
/// labelled metric up through the macros builds, hashes and clones its key on every call (about
/// a microsecond a step); a handle is an `Arc`, so each label set pays for that once per
/// thread. Linear lists: there are a handful of label sets, compared as short strings.
#[derive(Default)]
struct Handles {
    /// `baraza_steps_total` and `baraza_step_seconds` by (channel, provider, outcome).
    steps: Vec<(StepLabels, (Counter, Histogram))>,
    /// Single-label counters by (metric name, label value).
    counters: Vec<((&'static str, &'static str), Counter)>,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// `build` once per thread and label set, after the recorder is installed; before, every call.
fn cached<K: PartialEq + Copy, V: Clone>(
    list: impl FnOnce(&mut Handles) -> &mut Vec<(K, V)>,
    key: K,
    build: impl FnOnce() -> V,
) -> V {
    if !RECORDER_INSTALLED.load(Ordering::Acquire) {
        return build();
    }
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let list = list(&mut handles);
        if let Some((_, value)) = list.iter().find(|(k, _)| *k == key) {
            return value.clone();
        }
        let value = build();
        list.push((key, value.clone()));
        value
    })
}

/// One counter with one label, through the per-thread handle cache.
fn labelled_counter(name: &'static str, label: &'static str, value: &'static str) -> Counter {
    cached(
        |h| &mut h.counters,
        (name, value),
        || counter!(name, label => value),
    )
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
    let channel = channel.as_str();
    let (steps, seconds) = cached(
        |h| &mut h.steps,
        (channel, provider, outcome),
        || {
            (
                counter!("baraza_steps_total", "channel" => channel, "provider" => provider, "outcome" => outcome),
                histogram!("baraza_step_seconds", "channel" => channel),
            )
        },
    );
    steps.increment(1);
    seconds.record(latency.as_secs_f64());
}

/// Session lifecycle: started, completed, dropped, resumed, resume_offered, timed_out, failed.
pub fn session(event: &'static str) {
    labelled_counter("baraza_sessions_total", "event", event).increment(1);
}

/// A USSD step done from this node's copy of its session (`hit`), or a copy found stale by
/// the save (`stale`; the step was done again from the store).
pub fn session_cache(outcome: &'static str) {
    labelled_counter("baraza_session_cache_total", "outcome", outcome).increment(1);
}

/// An error, by kind (session_store, result_store, deadline, bad_request, ...).
pub fn error(kind: &'static str) {
    counter!("baraza_errors_total", "kind" => kind).increment(1);
}

/// A request refused by per-subscriber admission.
pub fn admission_refused() {
    counter!("baraza_admission_refused_total").increment(1);
}

/// A provider callback refused before it was parsed (`reason`: address, token, signature).
pub fn callback_refused(provider: &'static str, reason: &'static str) {
    counter!("baraza_callbacks_refused_total", "provider" => provider, "reason" => reason)
        .increment(1);
}

/// A request admitted without per-number tracking because the admission table was full of
/// numbers still inside their window (a flood of distinct numbers).
pub fn admission_untracked() {
    counter!("baraza_admission_untracked_total").increment(1);
}
