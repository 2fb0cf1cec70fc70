//! Who may call what, through the real router: provider callbacks (Twilio's signature, a
//! shared token, an address allow-list, trusted proxies) are refused with 403 before they are
//! parsed and store nothing; every admin route refuses a request without the admin token, and
//! a loopback request that came through a proxy; `/healthz` shows details to admins only.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use baraza::server::{self, AppState};
use common::{Stores, TestGateway, form};
use tower::ServiceExt;

const PUBLIC_URL: &str = "https://gw.example.org";
const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";

/// The gateway's routes as seen by a client at `peer`.
fn app_at(gw: &TestGateway, peer: [u8; 4]) -> Router {
    server::router(
        AppState::new(
            Arc::clone(&gw.gateway),
            baraza::telemetry::install_metrics(),
            None,
        )
        .expect("access rules parse"),
    )
    .layer(MockConnectInfo(SocketAddr::from((peer, 40000))))
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn post(path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body)).expect("request")
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method("GET").uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).expect("request")
}

fn refused_count(provider: &str, reason: &str) -> u64 {
    let Some(handle) = baraza::telemetry::install_metrics() else {
        return 0;
    };
    let needle =
        format!("baraza_callbacks_refused_total{{provider=\"{provider}\",reason=\"{reason}\"}} ");
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn twilio_call(call_sid: &str, from: &str) -> Vec<u8> {
    form(&[
        ("AccountSid", "ACtest"),
        ("CallSid", call_sid),
        ("From", from),
        ("To", "+254205000000"),
        ("Direction", "inbound"),
        ("CallStatus", "ringing"),
    ])
}

#[tokio::test]
async fn twiml_callbacks_need_twilios_signature_over_the_public_url() {
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.voice.public_url = PUBLIC_URL.into();
        c.callbacks.twilio.auth_token = Some(TWILIO_TOKEN.into());
    })
    .await;
    let app = app_at(&gw, [54, 172, 60, 1]);
    let body = twilio_call("CAsigned", "+254711000101");
    let signature = |url: &str, body: &[u8]| {
        baraza::channels::voice::twiml::signature(TWILIO_TOKEN, url, body).expect("signs")
    };

    let before = refused_count("twilio", "signature");
    let missing = send(&app, post("/voice/twiml", &[], body.clone())).await;
    let wrong_key =
        baraza::channels::voice::twiml::signature("another", "x", &body).expect("signs");
    let invalid = send(
        &app,
        post(
            "/voice/twiml",
            &[("x-twilio-signature", &wrong_key)],
            body.clone(),
        ),
    )
    .await;
    // Signed for another URL (the status route) and replayed to the voice route.
    let other_url = signature(&format!("{PUBLIC_URL}/voice/twiml/status"), &body);
    let replayed = send(
        &app,
        post(
            "/voice/twiml",
            &[("x-twilio-signature", &other_url)],
            body.clone(),
        ),
    )
    .await;
    // Signed, then a field changed on the way (another caller).
    let tampered_body = twilio_call("CAsigned", "+254711000999");
    let good = signature(&format!("{PUBLIC_URL}/voice/twiml"), &body);
    let tampered = send(
        &app,
        post(
            "/voice/twiml",
            &[("x-twilio-signature", &good)],
            tampered_body,
        ),
    )
    .await;
    for (what, (status, text)) in [
        ("missing", missing),
        ("invalid", invalid),
        ("replayed", replayed),
        ("tampered", tampered),
    ] {
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {text}");
        assert!(
            !text.contains("<Response"),
            "{what}: no TwiML for a refused call"
        );
    }
    assert!(
        gw.responses("service_feedback").await.is_empty(),
        "nothing stored"
    );
    assert!(refused_count("twilio", "signature") >= before + 4);

    let (status, xml) = send(
        &app,
        post(
            "/voice/twiml",
            &[("x-twilio-signature", &good)],
            body.clone(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(xml.contains("<Gather"), "the flow answers: {xml}");
    assert_eq!(gw.responses("service_feedback").await.len(), 1);

    // The next callback goes to the action URL the reply named, signed over that URL (its
    // query included), as Twilio does.
    let action = xml
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an action URL")
        .replace("&amp;", "&");
    assert!(action.starts_with(PUBLIC_URL), "{action}");
    let path = action.trim_start_matches(PUBLIC_URL).to_string();
    let digits = form(&[
        ("AccountSid", "ACtest"),
        ("CallSid", "CAsigned"),
        ("From", "+254711000101"),
        ("To", "+254205000000"),
        ("Direction", "inbound"),
        ("CallStatus", "in-progress"),
        ("Digits", "1"),
    ]);
    let signed = signature(&action, &digits);
    let (status, next) = send(
        &app,
        post(&path, &[("x-twilio-signature", &signed)], digits.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    gw.cleanup().await;
}

#[tokio::test]
async fn a_callback_token_is_required_and_voice_urls_carry_it() {
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.voice.public_url = PUBLIC_URL.into();
        c.callbacks.africastalking.token = Some("at-callback-token".into());
    })
    .await;
    let app = app_at(&gw, [196, 201, 214, 7]);
    let dial = form(&[
        ("sessionId", "tok-1"),
        ("serviceCode", "*999#"),
        ("phoneNumber", "+254711000201"),
        ("networkCode", "63902"),
        ("text", ""),
    ]);
    let before = refused_count("africastalking", "token");
    for path in [
        "/ussd/africastalking",
        "/ussd/africastalking?token=wrong",
        "/ussd/africastalking?token=",
        "/ussd/africastalking/events",
    ] {
        let (status, text) = send(&app, post(path, &[], dial.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {text}");
        assert!(!text.starts_with("CON"), "{path}");
    }
    assert!(
        gw.responses("e2e_survey").await.is_empty(),
        "nothing stored"
    );
    assert!(refused_count("africastalking", "token") >= before + 4);
    let (status, text) = send(
        &app,
        post("/ussd/africastalking?token=at-callback-token", &[], dial),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("CON "), "{text}");
    assert_eq!(gw.responses("e2e_survey").await.len(), 1);

    // A forged missed call or voice step is refused as well; a voice reply's callback URL
    // carries the token, so the provider's next callback passes.
    let call = form(&[
        ("sessionId", "ATVId_tok"),
        ("isActive", "1"),
        ("direction", "Inbound"),
        ("callerNumber", "+254711000202"),
        ("destinationNumber", "+254205000000"),
    ]);
    let (status, _) = send(&app, post("/voice/africastalking", &[], call.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, xml) = send(
        &app,
        post("/voice/africastalking?token=at-callback-token", &[], call),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(
        xml.contains(&format!(
            "callbackUrl=\"{PUBLIC_URL}/voice/africastalking?token=at-callback-token"
        )),
        "{xml}"
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn allow_lists_see_through_trusted_proxies_only() {
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.callbacks.hubtel.allow_from = vec!["41.215.160.0/24".into()];
        c.callbacks.trusted_proxies = vec!["10.1.1.1".into()];
    })
    .await;
    let hubtel = |session: &str| {
        serde_json::json!({
            "Type": "Initiation", "Message": "*999#", "ServiceCode": "*999#",
            "Operator": "vodafone", "ClientState": "", "Mobile": "233246000301",
            "SessionId": session, "Sequence": 1, "Platform": "USSD",
        })
        .to_string()
        .into_bytes()
    };
    let json = |path: &str, xff: Option<&str>, body: Vec<u8>| {
        let mut builder = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json");
        if let Some(xff) = xff {
            builder = builder.header("x-forwarded-for", xff);
        }
        builder.body(Body::from(body)).expect("request")
    };
    let before = refused_count("hubtel", "address");
    // From the provider's network: served.
    let (status, text) = send(
        &app_at(&gw, [41, 215, 160, 9]),
        json("/ussd/hubtel", None, hubtel("h-1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // From elsewhere, even claiming the provider's address: refused.
    let (status, _) = send(
        &app_at(&gw, [8, 8, 8, 8]),
        json("/ussd/hubtel", Some("41.215.160.9"), hubtel("h-2")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Through the trusted proxy: the forwarded address decides.
    let proxy = app_at(&gw, [10, 1, 1, 1]);
    let (status, _) = send(
        &proxy,
        json("/ussd/hubtel", Some("41.215.160.9"), hubtel("h-3")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &proxy,
        json("/ussd/hubtel", Some("41.215.160.9, 8.8.4.4"), hubtel("h-4")),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the address the proxy saw is 8.8.4.4"
    );
    assert!(refused_count("hubtel", "address") >= before + 2);
    assert_eq!(
        gw.responses("e2e_survey").await.len(),
        2,
        "only the allowed two"
    );
    gw.cleanup().await;
}

/// Every admin route, with a request that would succeed if it were let in.
fn admin_requests(headers: &[(&str, &str)]) -> Vec<(&'static str, Request<Body>)> {
    vec![
        ("reload", post("/admin/reload", headers, Vec::new())),
        (
            "sms send",
            post(
                "/sms/send",
                headers,
                br#"{"to":"+254711000001","text":"hi"}"#.to_vec(),
            ),
        ),
        ("sms message", get("/sms/messages/1", headers)),
        (
            "call attempts",
            get("/admin/call-attempts?number=%2B254711000001", headers),
        ),
    ]
}

#[tokio::test]
async fn every_admin_route_refuses_without_the_token() {
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.admin.token = Some("admin-token-for-tests".into());
    })
    .await;
    let local = app_at(&gw, [127, 0, 0, 1]);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "admin-token-for-tests")],
        vec![("authorization", "Basic admin-token-for-tests")],
    ] {
        for (route, request) in admin_requests(&headers) {
            let (status, body) = send(&local, request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{route} {headers:?}: {body}"
            );
        }
    }
    // With the token each route is let in (what it then answers is its own business).
    for (route, request) in admin_requests(&[("authorization", "Bearer admin-token-for-tests")]) {
        let (status, body) = send(&app_at(&gw, [10, 9, 8, 7]), request).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{route}: {body}");
    }
    gw.cleanup().await;
}

#[tokio::test]
async fn without_a_token_a_proxied_loopback_request_is_not_admin() {
    let gw = common::start(Stores::MemorySqlite).await;
    let local = app_at(&gw, [127, 0, 0, 1]);
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        for (route, request) in admin_requests(&[(header, "203.0.113.5")]) {
            let (status, body) = send(&local, request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{route} via {header}: {body}"
            );
        }
    }
    for (route, request) in admin_requests(&[]) {
        let (status, body) = send(&app_at(&gw, [192, 168, 1, 20]), request).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{route} from the LAN: {body}"
        );
    }
    for (route, request) in admin_requests(&[]) {
        let (status, body) = send(&local, request).await;
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "{route} direct loopback: {body}"
        );
    }
    gw.cleanup().await;
}

#[tokio::test]
async fn healthz_shows_details_to_admins_only() {
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.admin.token = Some("admin-token-for-tests".into());
    })
    .await;
    let app = app_at(&gw, [10, 0, 0, 3]);
    let (status, public) = send(&app, get("/healthz", &[])).await;
    assert_eq!(status, StatusCode::OK);
    let public: serde_json::Value = serde_json::from_str(&public).expect("json");
    assert_eq!(public, serde_json::json!({ "status": "ok" }));
    let (status, detailed) = send(
        &app,
        get(
            "/healthz",
            &[("authorization", "Bearer admin-token-for-tests")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let detailed: serde_json::Value = serde_json::from_str(&detailed).expect("json");
    assert_eq!(detailed["sessions"], "ok");
    assert!(
        detailed["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "e2e_survey@1")),
        "{detailed}"
    );
    gw.cleanup().await;
}
