//! `baraza serve`: the HTTP server, its routes, reload and graceful shutdown.
//!
//! Routes hand request bytes to a channel parser, the parsed request to the dispatcher, and
//! the reply to the channel renderer. Bad input gets a 400 with the parser's message, oversized
//! bodies a 413; nothing a caller sends produces a 500. Who may call which route is decided in
//! [`auth`] before a callback is parsed (403, nothing stored). Shutdown: stop accepting, let
//! in-flight steps finish, then flush the result store.

pub mod admin_api;
pub mod auth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::channels::ussd::UssdProvider;
use crate::channels::ussd::{self, africastalking, hubtel};
use crate::channels::voice::{self, VoiceProvider};
use crate::config::{Config, ResultsConfig, SessionsConfig};
use crate::dispatcher::Gateway;
use crate::flow::catalog::FlowCatalog;
use crate::result_store::{CallAttemptQuery, ResultStore};
use crate::session_store::{InMemorySessions, RedisSessions, SessionStore};
use crate::telemetry;
use crate::tls::TlsMaterial;
use auth::{CallbackCheck, CallbackSource, Guard};

/// Shared by every route.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub metrics: Option<PrometheusHandle>,
    /// The outbound SMS queue when SMS routes are configured (SMPP operators or HTTP routes;
    /// the `/sms` API and the SMS callbacks need it).
    pub outbox: Option<Arc<crate::sms::outbox::Outbox>>,
    /// Who may call the admin routes and post each provider's callbacks.
    pub guard: Arc<Guard>,
}

impl AppState {
    /// The state of a gateway's routes; fails when the access rules in its config do not
    /// parse (a bad CIDR).
    pub fn new(
        gateway: Arc<Gateway>,
        metrics: Option<PrometheusHandle>,
        outbox: Option<Arc<crate::sms::outbox::Outbox>>,
    ) -> anyhow::Result<AppState> {
        let guard = Guard::from_config(&gateway.config).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(AppState {
            gateway,
            metrics,
            outbox,
            guard: Arc::new(guard),
        })
    }
}

/// Builds the stores and the flow catalog from config.
///
/// The flows the folder holds are published to the result store (so every node and every
/// later start can load the versions sessions are pinned to); a version published before
/// with other content stops the start with the store's message.
pub async fn build_gateway(config: Config) -> anyhow::Result<Gateway> {
    let loaded = FlowCatalog::default()
        .reload_folder(std::slice::from_ref(&config.flows_dir))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sessions = match &config.sessions {
        SessionsConfig::Memory => SessionStore::InMemory(InMemorySessions::new()),
        SessionsConfig::Redis {
            url,
            key_prefix,
            response_timeout_ms,
            ..
        } => {
            let url = url.clone().ok_or_else(|| {
                anyhow::anyhow!("sessions.store is redis but no url is given (set sessions.url or BARAZA_REDIS_URL)")
            })?;
            let tls = TlsMaterial::load(&config.store_tls.redis)
                .map_err(|e| anyhow::anyhow!("store_tls.redis: {e}"))?;
            SessionStore::Redis(
                RedisSessions::connect_with_tls(
                    url.expose(),
                    key_prefix,
                    Duration::from_millis(*response_timeout_ms),
                    &tls,
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "redis at {}: {e}",
                        crate::config::redacted_url(url.expose())
                    )
                })?,
            )
        }
    };
    let results = open_result_store(&config).await?;
    crate::dispatcher::publish_flows(&results, &loaded)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "publishing the flows of {}: {e}",
                config.flows_dir.display()
            )
        })?;
    let pseudonym_key = config.pseudonym_key()?;
    let contacts = crate::contacts::ContactSchema::from_config(&config.contacts)
        .map_err(|e| anyhow::anyhow!("contacts: {e}"))?;
    carry_over_opt_outs(&sessions, &results, &contacts).await?;
    Ok(Gateway::new(
        config,
        loaded.catalog,
        sessions,
        results,
        pseudonym_key,
        contacts,
    ))
}

/// Stores in the result store's consent the opt-outs an older gateway kept in the session
/// store (safe to run at every start: a number already opted out is left as it is).
async fn carry_over_opt_outs(
    sessions: &SessionStore,
    results: &ResultStore,
    contacts: &crate::contacts::ContactSchema,
) -> anyhow::Result<()> {
    let numbers = sessions
        .opted_out_numbers()
        .await
        .map_err(|e| anyhow::anyhow!("reading the session store's opt-outs: {e}"))?;
    if numbers.is_empty() {
        return Ok(());
    }
    let consent = crate::contacts::consent::Consent {
        store: results,
        schema: contacts,
    };
    let carried = consent
        .carry_over(&numbers, crate::dispatcher::now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("carrying the session store's opt-outs over: {e}"))?;
    if carried > 0 {
        tracing::info!(
            carried,
            "opt-outs carried over from the session store to consent"
        );
    }
    Ok(())
}

/// Opens the configured result store (also used by `baraza results export`).
pub async fn open_result_store(config: &Config) -> anyhow::Result<ResultStore> {
    Ok(match &config.results {
        ResultsConfig::Sqlite { path } => ResultStore::open_sqlite(path)
            .await
            .map_err(|e| anyhow::anyhow!("sqlite result store at {}: {e}", path.display()))?,
        ResultsConfig::Postgres { url, schema } => {
            let url = url.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "results.store is postgres but no url is given (set results.url or BARAZA_POSTGRES_URL)"
                )
            })?;
            let tls = TlsMaterial::load(&config.store_tls.postgres)
                .map_err(|e| anyhow::anyhow!("store_tls.postgres: {e}"))?;
            ResultStore::open_postgres_with_tls(url.expose(), schema.as_deref(), &tls)
                .await
                .map_err(|e| anyhow::anyhow!("postgres result store: {e}"))?
        }
    })
}

/// Recorded prompts, read-only: `tower_http::services::ServeDir` refuses paths that leave the
/// folder (`..`, absolute paths), sets the content type from the extension and answers range
/// and conditional requests; recordings change only with a new file name, so caching is long.
fn audio_files<S: Clone + Send + Sync + 'static>(folder: &std::path::Path) -> Router<S> {
    use tower_http::services::ServeDir;
    use tower_http::set_header::SetResponseHeaderLayer;
    Router::new()
        .fallback_service(ServeDir::new(folder).append_index_html_on_directories(false))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("public, max-age=86400"),
        ))
}

pub fn router(state: AppState) -> Router {
    let max_body = state.gateway.config.ussd.max_body_bytes;
    let audio = audio_files(&state.gateway.config.voice.audio_dir);
    let mut routes = Router::new().nest("/audio", audio);
    // Each provider's callback routes sit behind that provider's check (403 before parsing).
    // A provider with no proof configured (local use; the gateway warned at start) gets no
    // middleware at all: nothing to check, nothing to pay per request.
    let guarded = |source: CallbackSource, provider_routes: Router<AppState>| {
        if state.guard.is_open(source) {
            return provider_routes;
        }
        provider_routes.route_layer(axum::middleware::from_fn_with_state(
            CallbackCheck {
                guard: Arc::clone(&state.guard),
                source,
                max_body,
            },
            auth::callbacks_only,
        ))
    };
    // Only the configured providers' routes exist; the compiler lists this match when a
    // provider is added.
    for provider in &state.gateway.config.ussd.providers {
        routes = match provider {
            UssdProvider::AfricasTalking => routes.merge(guarded(
                CallbackSource::AfricasTalking,
                Router::new()
                    .route("/ussd/africastalking", post(africastalking_ussd))
                    .route("/ussd/africastalking/events", post(africastalking_events)),
            )),
            UssdProvider::Hubtel => routes.merge(guarded(
                CallbackSource::Hubtel,
                Router::new().route("/ussd/hubtel", post(hubtel_ussd)),
            )),
            // USSD over SMPP arrives on the operator binds, not over HTTP.
            UssdProvider::Smpp => routes,
        };
    }
    for provider in &state.gateway.config.voice.providers {
        routes = match provider {
            VoiceProvider::AfricasTalking => routes.merge(guarded(
                CallbackSource::AfricasTalking,
                Router::new().route("/voice/africastalking", post(africastalking_voice)),
            )),
            VoiceProvider::Twiml => routes.merge(guarded(
                CallbackSource::Twilio,
                Router::new()
                    .route("/voice/twiml", post(twiml_voice))
                    .route("/voice/twiml/status", post(twiml_status)),
            )),
        };
    }
    for route in &state.gateway.config.smpp.http_routes {
        routes = match route {
            crate::config::SmsRouteConfig::AfricasTalking(_) => routes.merge(guarded(
                CallbackSource::AfricasTalking,
                Router::new()
                    .route("/sms/africastalking", post(africastalking_sms))
                    .route(
                        "/sms/africastalking/delivery",
                        post(africastalking_sms_delivery),
                    ),
            )),
        };
    }
    routes
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .route("/sms/send", post(sms_send))
        .route("/sms/messages/{id}", get(sms_message))
        .route("/admin/call-attempts", get(admin_call_attempts))
        .merge(admin_api::routes(Arc::clone(&state.guard)))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn bad_request(e: ussd::BadRequest) -> Response {
    telemetry::error("bad_request");
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("bad request: {e}\n"),
    )
        .into_response()
}

async fn africastalking_ussd(State(state): State<AppState>, body: Bytes) -> Response {
    let request = match africastalking::parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let reply = state.gateway.ussd_step(request).await;
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        africastalking::render(&reply),
    )
        .into_response()
}

async fn africastalking_events(State(state): State<AppState>, body: Bytes) -> Response {
    let event = match africastalking::parse_event(&body) {
        Ok(e) => e,
        Err(e) => return bad_request(e),
    };
    if let Err(e) = state
        .gateway
        .ussd_ended(
            "africastalking",
            &event.session_id,
            &event.subscriber,
            &event.status,
        )
        .await
    {
        warn!(error = %e, "end-of-session notification not recorded");
        telemetry::error("end_notification");
        return (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response();
    }
    (StatusCode::OK, "OK\n").into_response()
}

async fn hubtel_ussd(State(state): State<AppState>, body: Bytes) -> Response {
    let request = match hubtel::parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let session_id = request.session_id.clone();
    let reply = state.gateway.ussd_step(request).await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        hubtel::render(&session_id, &reply),
    )
        .into_response()
}

fn sms_bad_callback(e: crate::sms::africastalking::BadCallback) -> Response {
    telemetry::error("bad_request");
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("bad request: {e}\n"),
    )
        .into_response()
}

/// Answers a callback that was not taken: 503 so the provider posts it again.
fn sms_not_taken(e: crate::sms::http_inbound::InboundError) -> Response {
    warn!(error = %e, "SMS callback not taken: the provider posts it again");
    telemetry::error("sms_callback");
    (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response()
}

/// `POST /sms/africastalking`: an incoming message, kept before the 200 (a store failure
/// answers 503, so Africa's Talking posts it again), then handled as an SMS step.
async fn africastalking_sms(State(state): State<AppState>, body: Bytes) -> Response {
    let incoming = match crate::sms::africastalking::parse_incoming(&body) {
        Ok(incoming) => incoming,
        Err(e) => return sms_bad_callback(e),
    };
    let Some(outbox) = &state.outbox else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no SMS route\n").into_response();
    };
    match crate::sms::http_inbound::keep_incoming(outbox, incoming).await {
        Ok(crate::sms::http_inbound::Kept::New) => (StatusCode::OK, "OK\n").into_response(),
        Ok(crate::sms::http_inbound::Kept::Already) => {
            (StatusCode::OK, "OK (a repeat: kept already)\n").into_response()
        }
        Err(e) => sms_not_taken(e),
    }
}

/// `POST /sms/africastalking/delivery[?route=NAME]`: a delivery report, stored against its
/// message before the 200.
async fn africastalking_sms_delivery(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let report = match crate::sms::africastalking::parse_delivery(&body) {
        Ok(report) => report,
        Err(e) => return sms_bad_callback(e),
    };
    let route = crate::channels::form::form_fields(query.as_deref().unwrap_or("").as_bytes())
        .ok()
        .and_then(|fields| fields.get("route").cloned());
    let Some(outbox) = &state.outbox else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no SMS route\n").into_response();
    };
    match crate::sms::http_inbound::record_delivery(outbox, route.as_deref(), &report).await {
        Ok(()) => (StatusCode::OK, "OK\n").into_response(),
        Err(e) => sms_not_taken(e),
    }
}

fn voice_bad_request(e: voice::BadRequest) -> Response {
    telemetry::error("bad_request");
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("bad request: {e}\n"),
    )
        .into_response()
}

/// Where providers post the next callback of a call (with the provider's callback token when
/// one is set, so that callback passes the same check), and where recordings are served from.
fn voice_urls(state: &AppState, source: CallbackSource, route: &str) -> (String, voice::AudioBase) {
    let base = state.gateway.config.voice.public_url.trim_end_matches('/');
    let action = match state.guard.callback_query(source) {
        Some(query) => format!("{base}{route}?{query}"),
        None => format!("{base}{route}"),
    };
    (action, voice::AudioBase::new(base))
}

async fn africastalking_voice(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let request =
        match voice::africastalking::parse_with_query(&body, query.as_deref().unwrap_or("")) {
            Ok(r) => r,
            Err(e) => return voice_bad_request(e),
        };
    let (action_url, audio) = voice_urls(
        &state,
        CallbackSource::AfricasTalking,
        "/voice/africastalking",
    );
    let reply = state.gateway.voice_step(request, &action_url).await;
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        voice::africastalking::render(&reply, &audio),
    )
        .into_response()
}

async fn twiml_voice(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let request = match voice::twiml::parse(&body, query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return voice_bad_request(e),
    };
    let (action_url, audio) = voice_urls(&state, CallbackSource::Twilio, "/voice/twiml");
    let reply = state.gateway.voice_step(request, &action_url).await;
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        voice::twiml::render(&reply, &audio),
    )
        .into_response()
}

/// TwiML status callbacks (`statusCallback`): the call ended (or never connected); the
/// provider wants only a 2xx.
async fn twiml_status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let request = match voice::twiml::parse(&body, query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return voice_bad_request(e),
    };
    if request.call_over {
        let (action_url, _) = voice_urls(&state, CallbackSource::Twilio, "/voice/twiml");
        let _ = state.gateway.voice_step(request, &action_url).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

fn health_text<E: std::fmt::Display>(
    r: &Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> (bool, String) {
    match r {
        Ok(Ok(())) => (true, "ok".into()),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, "timed out".into()),
    }
}

/// `GET /healthz`: 200 or 503 with `{"status": ...}` for anyone (load balancers); which
/// store failed and how, and the loaded flows, only for an admin (store errors can name hosts
/// and users).
async fn healthz(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let gateway = &state.gateway;
    let (sessions, results) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(1), gateway.sessions.ping()),
        tokio::time::timeout(Duration::from_secs(1), gateway.results.ping()),
    );
    let (sessions_ok, sessions_text) = health_text(&sessions);
    let (results_ok, results_text) = health_text(&results);
    let flows: Vec<String> = gateway
        .catalog()
        .summary()
        .into_iter()
        .map(|(id, v)| format!("{id}@{v}"))
        .collect();
    let healthy = sessions_ok && results_ok;
    let status = if healthy { "ok" } else { "degraded" };
    let body = if state.guard.admin(peer, &headers) {
        serde_json::json!({
            "status": status,
            "sessions": sessions_text,
            "results": results_text,
            "flows": flows,
        })
    } else {
        serde_json::json!({ "status": status })
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// Reloads flows from disk: checked first; a broken folder is refused and the running flows
/// stay. The versions it holds are published to the result store (a version published before
/// with other content refuses the reload), and flows it no longer has are retired there, so
/// every node's poll picks both up.
pub async fn reload_flows(gateway: &Gateway) -> Result<String, String> {
    let paths: Vec<PathBuf> = vec![gateway.config.flows_dir.clone()];
    let refused = |e: String| {
        warn!(error = %e, "flow reload refused");
        telemetry::error("reload_refused");
        Err(format!("{e}\n"))
    };
    // Computed from a snapshot; a version a step or the poll added meanwhile means computing
    // again, so nothing added is lost.
    let reloaded = loop {
        let snapshot = gateway.catalog();
        let reloaded = match snapshot.reload_folder(&paths) {
            Ok(reloaded) => reloaded,
            Err(e) => return refused(e.to_string()),
        };
        if let Err(e) = crate::dispatcher::publish_flows(&gateway.results, &reloaded).await {
            return refused(format!("flows not published to the result store: {e}"));
        }
        if gateway.replace_catalog_if(&snapshot, reloaded.catalog.clone()) {
            break reloaded;
        }
    };
    let summary = reloaded
        .catalog
        .summary()
        .into_iter()
        .map(|(id, v)| format!("{id}@{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    if reloaded.retired.is_empty() {
        info!(flows = %summary, "flows reloaded");
        Ok(format!("reloaded: {summary}\n"))
    } else {
        let retired = reloaded.retired.join(", ");
        info!(flows = %summary, %retired, "flows reloaded; retired flows finish their sessions");
        Ok(format!("reloaded: {summary}\nretired: {retired}\n"))
    }
}

/// Admin routes need the configured bearer token, or, without one, a direct loopback peer
/// (see [`Guard::admin`]).
fn admin_authorised(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    state.guard.admin(peer, headers)
}

fn unauthorised() -> Response {
    (StatusCode::UNAUTHORIZED, "admin token required\n").into_response()
}

async fn admin_reload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !admin_authorised(&state, peer, &headers) {
        return unauthorised();
    }
    match reload_flows(&state.gateway).await {
        Ok(message) => (StatusCode::OK, message).into_response(),
        Err(message) => (StatusCode::UNPROCESSABLE_ENTITY, message).into_response(),
    }
}

/// The body of `POST /sms/send`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SendSmsRequest {
    /// Destination number.
    to: String,
    /// The text.
    text: String,
    /// Operator name; routed by number prefix when absent.
    #[serde(default)]
    operator: Option<String>,
    /// Sender; the operator's configured sender when absent.
    #[serde(default)]
    from: Option<String>,
}

fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

/// `POST /sms/send` (admin): stores the message in the outbound queue and answers 202 with
/// its id once it is durable; the state is then at `GET /sms/messages/{id}`.
async fn sms_send(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use crate::sms::outbox::{NewSms, OutboxError};
    if !admin_authorised(&state, peer, &headers) {
        return unauthorised();
    }
    let Some(outbox) = &state.outbox else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no SMS route is configured (smpp.operators or smpp.http_routes)",
        );
    };
    let request: SendSmsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let to = crate::channels::normalise_msisdn(request.to.trim());
    if to.len() < 3
        || !to
            .trim_start_matches('+')
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "`to` must be a phone number (digits, optionally starting with +)",
        );
    }
    if request.text.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "`text` must not be empty");
    }
    let sms = NewSms {
        operator: request.operator,
        to,
        from: request.from,
        text: request.text,
        purpose: "api".to_string(),
    };
    match outbox.enqueue(vec![sms]).await {
        Ok(ids) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "id": ids.first(), "state": "queued" })),
        )
            .into_response(),
        Err(e @ (OutboxError::NoRoute(_) | OutboxError::UnknownOperator(_))) => {
            json_error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Err(e @ OutboxError::Store(_)) => {
            telemetry::error("result_store");
            json_error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

/// `GET /sms/messages/{id}` (admin): the stored message with each part's outcome and
/// delivery receipt. The number is pseudonymised unless `?raw_numbers=true`.
async fn sms_message(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !admin_authorised(&state, peer, &headers) {
        return unauthorised();
    }
    match state.gateway.results.sms_message(&id).await {
        Ok(Some(mut row)) => {
            if query.get("raw_numbers").map(String::as_str) != Some("true") {
                row.recipient = state.gateway.pseudonym(&row.recipient);
            }
            let delivery = row.delivery().map(str::to_string);
            let mut body = serde_json::to_value(&row).unwrap_or_default();
            body["delivery"] = serde_json::json!(delivery);
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("no message `{id}`")),
        Err(e) => {
            telemetry::error("result_store");
            json_error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

/// `GET /admin/call-attempts?number=...` or `?call_id=...`: the stored outbound call attempts
/// of a number or of one call, oldest first, as JSON. Numbers come back pseudonymised.
async fn admin_call_attempts(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !admin_authorised(&state, peer, &headers) {
        return unauthorised();
    }
    let fields = match crate::channels::form::form_fields(query.as_deref().unwrap_or("").as_bytes())
    {
        Ok(fields) => fields,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{}\n", e.0)).into_response(),
    };
    let field = |name: &str| {
        fields
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let query = match (field("number"), field("call_id")) {
        (Some(number), None) => {
            CallAttemptQuery::Subscriber(crate::channels::normalise_msisdn(&number))
        }
        (None, Some(call_id)) => CallAttemptQuery::CallId(call_id),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "give exactly one of `number` and `call_id`\n",
            )
                .into_response();
        }
    };
    match state.gateway.results.call_attempts(query).await {
        Ok(attempts) => {
            let rows: Vec<serde_json::Value> = attempts
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "attempt_id": a.attempt_id,
                        "provider": a.provider,
                        "subscriber": state.gateway.pseudonym(&a.subscriber),
                        "flow_id": a.flow_id,
                        "purpose": a.purpose,
                        "attempt": a.attempt,
                        "placed_at_ms": a.placed_at_ms,
                        "status": a.status.as_str(),
                        "outcome": a.outcome,
                        "provider_status": a.provider_status,
                        "duration_seconds": a.duration_seconds,
                        "provider_call_id": a.provider_call_id,
                        "reason": a.reason,
                        "updated_at_ms": a.updated_at_ms,
                        "ended_at_ms": a.ended_at_ms,
                        "node": a.node,
                        "due_at_ms": a.due_at_ms,
                    })
                })
                .collect();
            axum::Json(rows).into_response()
        }
        Err(e) => {
            warn!(error = %e, "call attempts not read");
            telemetry::error("admin_read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the result store cannot be read now\n",
            )
                .into_response()
        }
    }
}

/// Runs the server until `shutdown` resolves; then drains in-flight steps and flushes results.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let guard = Guard::from_config(&gateway.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    auth::check_exposure(&gateway.config, &guard, listener.local_addr()?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Inbound messages this process keeps are received from now on; older unhandled ones were
    // left by an earlier run.
    let started_ms = crate::dispatcher::now_ms();
    crate::sms::africastalking::check_routes(&gateway.config)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let binds = Arc::new(crate::sms::binds::Binds::start(Arc::clone(&gateway)));
    let state = AppState::new(
        Arc::clone(&gateway),
        telemetry::install_metrics(),
        binds
            .outbox()
            .has_routes()
            .then(|| Arc::clone(binds.outbox())),
    )?;
    let app = router(state.clone());
    // Outbound calls (missed-call callbacks), when `voice.outbound` is configured.
    crate::outbound::Dialer::start(&gateway).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Histograms keep their samples until upkeep folds them in; without a scrape of
    // `/metrics` they would grow by a sample per step for as long as the node runs.
    if let Some(handle) = state.metrics.clone() {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    // This node's copies of sessions abandoned mid-flow expire lazily; this sweep lets their
    // memory go without waiting for the cache to fill. Admission forgets numbers back at a
    // full burst on the same beat.
    {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                gateway.purge_expired_copies();
                gateway.admission.housekeeping();
            }
        });
    }
    // Flow versions and retirements other nodes published (a reload there reaches this
    // node within one period); the first tick, at once, loads what was published before.
    {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let period = Duration::from_millis(gateway.config.flows_poll_ms.max(100));
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match gateway.sync_flows().await {
                    Ok(sync) if sync.is_empty() => {}
                    Ok(sync) => info!(
                        added = ?sync.added,
                        retired = ?sync.retired,
                        restored = ?sync.restored,
                        refused = sync.refused,
                        "flow versions from the result store"
                    ),
                    Err(e) => {
                        telemetry::error("flow_sync");
                        warn!(error = %e, "flow versions not read from the result store; retried at the next poll");
                    }
                }
            }
        });
    }
    // The in-memory store also expires entries lazily; this sweep bounds memory when many
    // sessions are abandoned (Redis expires keys itself).
    if matches!(gateway.sessions, SessionStore::InMemory(_)) {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                if let SessionStore::InMemory(sessions) = &gateway.sessions {
                    sessions.purge_expired();
                }
            }
        });
    }
    if binds.outbox().has_routes() {
        info!(operators = ?binds.operators(), "SMS routes started (SMPP binds and HTTP routes)");
        // What a previous run of this node left: messages in the outbound queue, and inbound
        // messages kept (and acknowledged) but not handled.
        let outbox = Arc::clone(binds.outbox());
        let recovering = Arc::clone(&binds);
        tokio::spawn(async move {
            if let Err(e) = outbox.recover().await {
                warn!(error = %e, "outbound SMS recovery failed: retried at the next start");
            }
            recovering.recover_inbound(started_ms).await;
        });
        // SMS reminders and timeouts: the timers live in the session store, so any node may
        // fire them (each fires once).
        let binds = Arc::clone(&binds);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                binds.send_due_reminders(crate::dispatcher::now_ms()).await;
                // Messages a passing store failure left unfinished (see `Outbox::sweep`).
                if let Err(e) = binds.outbox().sweep(Duration::from_secs(60)).await {
                    warn!(error = %e, "outbound SMS sweep failed");
                }
                binds
                    .recover_inbound(crate::dispatcher::now_ms().saturating_sub(60_000))
                    .await;
            }
        });
    }
    let addr = listener.local_addr()?;
    // Tests and scripts wait for this line (with the real port when listening on port 0).
    info!("listening on http://{addr}");
    // No Nagle delay: a reply is one small write that the aggregator waits for.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    // Outbound SMS in flight get a moment to be answered; the rest stay stored.
    binds.shutdown(Duration::from_secs(5)).await;
    // Outbound calls queued, waiting for a retry or ringing stay stored for the next start.
    if let Some(dialer) = gateway.dialer.get() {
        dialer.shutdown();
    }
    info!("stopped accepting; flushing the result store");
    gateway
        .results
        .flush_and_close()
        .await
        .map_err(|e| anyhow::anyhow!("flush on shutdown: {e}"))?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; reloads flows on every SIGHUP meanwhile.
///
/// The handlers are installed when this is called, not when the future is first polled: the
/// server polls it from a task of its own, and a SIGTERM sent the moment the gateway answers
/// (a supervisor, a test) must already mean "shut down gracefully", never the default action
/// of dying by the signal with the result store unflushed.
pub fn shutdown_signal(gateway: Arc<Gateway>) -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = handlers else {
            warn!("cannot install signal handlers; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => { let _ = reload_flows(&gateway).await; }
            }
        }
        info!("shutdown signal received");
    }
}
