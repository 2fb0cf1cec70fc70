//! The SMSC simulator's control endpoint (`baraza smsc-sim --http ADDR`): lets a developer or a
//! script play the handset side by hand: send an SMS or a USSD message from a phone, read what
//! the phone received, drop the gateway's connections. For development and tests only; it
//! never talks SMPP itself (the simulator does) and has no authentication, so bind it to
//! loopback.

use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::smpp::smsc_sim::SimHandle;
use crate::smpp::tlv::{ItsSessionInfo, Tlv, UssdServiceOp};

/// The routes: `POST /mo` (from, to, text), `POST /ussd` (from, to, text, op, session,
/// sequence, end), `POST /drop`, `GET /messages`, `GET /stats`.
pub fn router(sim: SimHandle) -> Router {
    Router::new()
        .route("/mo", post(mobile_originated))
        .route("/ussd", post(ussd))
        .route("/drop", post(drop_connections))
        .route("/messages", get(messages))
        .route("/stats", get(stats))
        .with_state(sim)
}

#[derive(Deserialize)]
struct Mo {
    from: String,
    to: String,
    text: String,
}

async fn mobile_originated(State(sim): State<SimHandle>, Form(mo): Form<Mo>) -> Response {
    match sim.inject_mo(&mo.from, &mo.to, &mo.text) {
        Ok(parts) => Json(json!({ "parts": parts })).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize)]
struct Ussd {
    from: String,
    to: String,
    #[serde(default)]
    text: String,
    /// `ussd_service_op`: 1 begins (PSSR indication), 18 answers (USSR confirm).
    op: u8,
    /// `its_session_info` session number.
    session: u8,
    #[serde(default)]
    sequence: u8,
    #[serde(default)]
    end: bool,
}

async fn ussd(State(sim): State<SimHandle>, Form(message): Form<Ussd>) -> Response {
    let tlvs = vec![
        Tlv::ussd_service_op(UssdServiceOp(message.op)),
        Tlv::its_session_info(ItsSessionInfo {
            session_number: message.session,
            sequence: message.sequence,
            end_of_session: message.end,
        }),
    ];
    match sim.inject_ussd(&message.from, &message.to, &message.text, tlvs) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn drop_connections(State(sim): State<SimHandle>) -> Response {
    Json(json!({ "dropped": sim.drop_connections() })).into_response()
}

async fn messages(State(sim): State<SimHandle>) -> Response {
    let stats = sim.stats();
    let sms: Vec<_> = stats
        .messages
        .iter()
        .map(|m| json!({ "from": m.source, "to": m.destination, "text": m.text, "parts": m.parts }))
        .collect();
    let ussd: Vec<_> = stats
        .ussd_submits
        .iter()
        .map(|sm| {
            json!({
                "to": sm.destination_addr.to_string_lossy(),
                "text": String::from_utf8_lossy(&sm.short_message),
            })
        })
        .collect();
    Json(json!({ "sms": sms, "ussd": ussd })).into_response()
}

async fn stats(State(sim): State<SimHandle>) -> Response {
    let s = sim.stats();
    Json(json!({
        "connections": s.connections,
        "binds": s.binds,
        "bind_failures": s.bind_failures,
        "submits": s.submits,
        "accepted": s.accepted,
        "throttled": s.throttled,
        "receipts_sent": s.receipts_sent,
        "mo_parts_sent": s.mo_parts_sent,
        "unbinds_received": s.unbinds_received,
        "generic_nacks_sent": s.generic_nacks_sent,
    }))
    .into_response()
}
