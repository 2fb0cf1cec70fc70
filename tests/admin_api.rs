//! The admin HTTP API (`/admin/api/v1`) through the real router, on SQLite and on
//! PostgreSQL: every route refuses a request without the admin token (401) and with a wrong
//! one (403), loopback or not; contacts are created, read, listed with a cursor, counted in
//! segments, opted out and back in with the log to show for it; bad bodies and numbers get a
//! clear JSON error; the OpenAPI document names every route the file serves.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Stores, TestGateway};
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-for-tests";
const API: &str = "/admin/api/v1";

async fn start(stores: Stores) -> TestGateway {
    common::start_with(stores, |c| c.admin.token = Some(TOKEN.into())).await
}

/// One request with `authorization` (when given) and a JSON body (when given); the status
/// and the JSON answer (`Value::Null` for a body that is not JSON).
async fn call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let (status, text) = gw.send(request).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A request with the admin token.
async fn admin(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    call(gw, method, path, Some(&format!("Bearer {TOKEN}")), body).await
}

/// Every route of the API with a request that would succeed if it were let in.
fn every_route() -> Vec<(&'static str, String, Option<&'static str>)> {
    vec![
        ("GET", format!("{API}/contacts"), None),
        (
            "POST",
            format!("{API}/contacts"),
            Some(r#"{"number":"+254712000001"}"#),
        ),
        ("GET", format!("{API}/contacts/+254712000001"), None),
        (
            "POST",
            format!("{API}/contacts/+254712000001/opt-out"),
            None,
        ),
        ("POST", format!("{API}/contacts/+254712000001/opt-in"), None),
        ("GET", format!("{API}/contacts/+254712000001/consent"), None),
        ("GET", format!("{API}/segments"), None),
        ("GET", format!("{API}/segments/nairobi_women/count"), None),
        ("GET", "/admin/openapi.json".to_string(), None),
    ]
}

#[tokio::test]
async fn every_route_refuses_without_the_token_and_with_a_wrong_one() {
    let gw = start(Stores::MemorySqlite).await;
    for (method, path, body) in every_route() {
        // The test router's peer is loopback: there is no loopback exception.
        for missing in [None, Some(TOKEN), Some("Basic admin-token-for-tests")] {
            let (status, answer) = call(&gw, method, &path, missing, body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {missing:?}"
            );
            assert!(
                answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Bearer")),
                "{answer}"
            );
        }
        for wrong in ["Bearer wrong", "Bearer ", "Bearer admin-token-for-test"] {
            let (status, answer) = call(&gw, method, &path, Some(wrong), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} {wrong}");
            assert!(answer["error"].is_string(), "{answer}");
        }
    }
    // Nothing the refused requests carried was stored.
    let (status, _) = admin(&gw, "GET", &format!("{API}/contacts/+254712000001"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, log) = admin(
        &gw,
        "GET",
        &format!("{API}/contacts/+254712000001/consent"),
        None,
    )
    .await;
    assert_eq!(log["log"], json!([]));
    for (method, path, body) in every_route() {
        let (status, answer) = admin(&gw, method, &path, body).await;
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
            "{method} {path}: {answer}"
        );
    }
    gw.cleanup().await;
}

#[tokio::test]
async fn without_a_configured_token_every_route_is_refused_even_on_loopback() {
    let gw = common::start(Stores::MemorySqlite).await;
    for (method, path, body) in every_route() {
        let (status, _) = call(&gw, method, &path, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        let (status, _) = call(&gw, method, &path, Some("Bearer anything"), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    gw.cleanup().await;
}

const SEGMENTS: &str = "segments:\n  nairobi_women:\n    all:\n      - { field: county, equals: Nairobi }\n      - { field: gender, equals: female }\n  no_ward_yet: { field: ward, missing: true }\n";

async fn contacts_and_consent_round_trip(stores: Stores) {
    let gw = start(stores).await;
    let campaigns = gw.config.flows_dir.join("campaigns");
    std::fs::create_dir_all(&campaigns).expect("campaigns folder");
    std::fs::write(campaigns.join("segments.yaml"), SEGMENTS).expect("segments file");

    // Create: numbers in any usual form, values read the way an import reads them.
    let (status, wanjiku) = admin(
        &gw,
        "POST",
        &format!("{API}/contacts"),
        Some(r#"{"number":"0712 000 001","name":"Wanjiku Kamau","gender":"Mwanamke","language":"Kiswahili","birth_year":1990,"fields":{"county":"Nairobi","ward":"Kibra"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{wanjiku}");
    assert_eq!(wanjiku["number"], "+254712000001");
    assert_eq!(wanjiku["gender"], "female");
    assert_eq!(wanjiku["language"], "sw");
    assert_eq!(wanjiku["operator"], "safaricom");
    assert_eq!(
        wanjiku["fields"],
        json!({"county": "Nairobi", "ward": "Kibra"})
    );
    assert!(
        wanjiku["contact"]
            .as_str()
            .is_some_and(|p| !p.contains("712000001"))
    );
    for body in [
        r#"{"number":"+254733000002","name":"Otieno","gender":"m","fields":{"county":"Nairobi"}}"#,
        r#"{"number":"254712000003","name":"Achieng","gender":"F","fields":{"county":"Mombasa"}}"#,
    ] {
        let (status, answer) = admin(&gw, "POST", &format!("{API}/contacts"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    // Get, by any form of the number.
    let (status, got) = admin(
        &gw,
        "GET",
        &format!("{API}/contacts/0712%20000%20001"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["name"], "Wanjiku Kamau");
    assert_eq!(got["birth_year"], 1990);

    // The same body again changes nothing; a new body replaces the fields.
    let (status, again) = admin(
        &gw,
        "POST",
        &format!("{API}/contacts"),
        Some(r#"{"number":"+254712000001","name":"Wanjiku Kamau","gender":"female","language":"sw","birth_year":1990,"fields":{"county":"Nairobi","ward":"Kibra"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["updated_at_ms"], wanjiku["updated_at_ms"]);
    let (status, updated) = admin(
        &gw,
        "POST",
        &format!("{API}/contacts"),
        Some(r#"{"number":"+254712000001","name":"Wanjiku Kamau","gender":"female","fields":{"county":"Nairobi"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["fields"], json!({"county": "Nairobi"}));
    assert_eq!(updated["language"], Value::Null);
    assert_eq!(updated["created_at_ms"], wanjiku["created_at_ms"]);

    // List, two at a time, in number order.
    let (status, first) = admin(&gw, "GET", &format!("{API}/contacts?limit=2"), None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let numbers = |page: &Value| -> Vec<String> {
        page["contacts"]
            .as_array()
            .expect("contacts")
            .iter()
            .map(|c| c["number"].as_str().expect("number").to_string())
            .collect()
    };
    assert_eq!(numbers(&first), ["+254712000001", "+254712000003"]);
    let cursor = first["next"].as_str().expect("a next cursor");
    let (_, second) = admin(
        &gw,
        "GET",
        &format!(
            "{API}/contacts?limit=2&after={}",
            common::form_encode(cursor)
        ),
        None,
    )
    .await;
    assert_eq!(numbers(&second), ["+254733000002"]);
    assert_eq!(second["next"], Value::Null);
    let (_, women) = admin(
        &gw,
        "GET",
        &format!("{API}/contacts?segment=nairobi_women&limit=1"),
        None,
    )
    .await;
    assert_eq!(numbers(&women), ["+254712000001"]);

    // Segments.
    let (status, segments) = admin(&gw, "GET", &format!("{API}/segments"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        segments["segments"],
        json!(["nairobi_women", "no_ward_yet"])
    );
    let (_, count) = admin(
        &gw,
        "GET",
        &format!("{API}/segments/no_ward_yet/count?by=county"),
        None,
    )
    .await;
    assert_eq!(count["total"], 3, "{count}");
    assert_eq!(count["by"], json!({"Mombasa": 1, "Nairobi": 2}));
    let (_, count) = admin(
        &gw,
        "GET",
        &format!("{API}/segments/nairobi_women/count"),
        None,
    )
    .await;
    assert_eq!(count["total"], 1);
    assert_eq!(count["by"], Value::Null);

    // Opt out: recorded once, logged, and the contact leaves every segment.
    let opt_out = format!("{API}/contacts/+254712000001/opt-out");
    let (status, out) = admin(&gw, "POST", &opt_out, None).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["changed"], true);
    assert_eq!(out["consent"]["status"], "opted_out");
    assert_eq!(out["consent"]["source"], "api");
    assert_eq!(out["consent"]["by"], "admin");
    let (_, out) = admin(&gw, "POST", &opt_out, None).await;
    assert_eq!(out["changed"], false);
    assert!(
        gw.gateway
            .consent()
            .is_opted_out("0712000001")
            .await
            .expect("reads")
    );
    let (_, count) = admin(
        &gw,
        "GET",
        &format!("{API}/segments/nairobi_women/count"),
        None,
    )
    .await;
    assert_eq!(count["total"], 0);
    let (_, got) = admin(&gw, "GET", &format!("{API}/contacts/+254712000001"), None).await;
    assert_eq!(got["consent"]["status"], "opted_out");

    // Opt back in; the log holds both changes, oldest first.
    let (status, back) = admin(
        &gw,
        "POST",
        &format!("{API}/contacts/0712000001/opt-in"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["changed"], true);
    assert_eq!(back["consent"]["status"], "opted_in");
    let (status, log) = admin(
        &gw,
        "GET",
        &format!("{API}/contacts/+254712000001/consent"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["consent"]["status"], "opted_in");
    let entries = log["log"].as_array().expect("log");
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["opted_out", "opted_in"]);
    assert!(
        entries
            .iter()
            .all(|e| e["source"] == "api" && e["by"] == "admin")
    );
    assert!(
        !gw.gateway
            .consent()
            .is_opted_out("+254712000001")
            .await
            .expect("reads")
    );

    // An opt-out holds for a number that is not a contact (even of a country not accepted).
    let (status, out) = admin(
        &gw,
        "POST",
        &format!("{API}/contacts/+255754123456/opt-out"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert!(
        gw.gateway
            .consent()
            .is_opted_out("+255754123456")
            .await
            .expect("reads")
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn contacts_and_consent_round_trip_on_sqlite() {
    contacts_and_consent_round_trip(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn contacts_and_consent_round_trip_on_postgres() {
    contacts_and_consent_round_trip(Stores::RedisPostgres).await;
}

/// The status and error message of a request with the token.
async fn refusal(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, String) {
    let (status, answer) = admin(gw, method, path, body).await;
    let message = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no error message in {answer}"))
        .to_string();
    (status, message)
}

async fn bad_requests_get_a_clear_error(stores: Stores) {
    let gw = start(stores).await;
    let contacts = format!("{API}/contacts");
    for (body, status, says) in [
        ("not json", StatusCode::BAD_REQUEST, "invalid JSON body"),
        ("{}", StatusCode::BAD_REQUEST, "missing field `number`"),
        (
            r#"{"number":"0712000001","shoe_size":42}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `shoe_size`",
        ),
        (
            r#"{"number":"0712000001","birth_year":"nineteen"}"#,
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            r#"{"number":"hello"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "number: unreadable number",
        ),
        (
            r#"{"number":"+255754123456"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "another country (TZ",
        ),
        (
            r#"{"number":"0712000001","gender":"robot"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "gender: `robot` is not one of",
        ),
        (
            r#"{"number":"0712000001","birth_year":2999}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "birth_year",
        ),
        (
            r#"{"number":"0712000001","fields":{"shoe_size":"42"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "fields.shoe_size: not a declared field",
        ),
    ] {
        let (got, message) = refusal(&gw, "POST", &contacts, Some(body)).await;
        assert_eq!(got, status, "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
    // Every problem of a body at once, none of them quoting the number.
    let (got, message) = refusal(
        &gw,
        "POST",
        &contacts,
        Some(r#"{"number":"071200","gender":"robot","age_band":"old"}"#),
    )
    .await;
    assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message.contains("number:") && message.contains("gender:") && message.contains("age_band:"),
        "{message}"
    );
    assert!(!message.contains("071200"), "{message}");

    for (method, path, status, says) in [
        (
            "GET",
            format!("{API}/contacts/+254712999999"),
            StatusCode::NOT_FOUND,
            "no contact",
        ),
        (
            "GET",
            format!("{API}/contacts/hello"),
            StatusCode::BAD_REQUEST,
            "number:",
        ),
        (
            "POST",
            format!("{API}/contacts/hello/opt-out"),
            StatusCode::BAD_REQUEST,
            "number:",
        ),
        (
            "GET",
            format!("{API}/contacts?limit=0"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "GET",
            format!("{API}/contacts?limit=lots"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "GET",
            format!("{API}/contacts?colour=red"),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "GET",
            format!("{API}/contacts?segment=nobody"),
            StatusCode::NOT_FOUND,
            "no segment `nobody`",
        ),
        (
            "GET",
            format!("{API}/segments/nobody/count"),
            StatusCode::NOT_FOUND,
            "no segment `nobody`",
        ),
        (
            "GET",
            format!("{API}/segments/nobody/count?by=shoe"),
            StatusCode::BAD_REQUEST,
            "`shoe` is not a field",
        ),
    ] {
        let (got, message) = refusal(&gw, method, &path, None).await;
        assert_eq!(got, status, "{method} {path}: {message}");
        assert!(message.contains(says), "{method} {path}: {message}");
    }
    // Without a segments file there are no segments.
    let (status, segments) = admin(&gw, "GET", &format!("{API}/segments"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(segments["segments"], json!([]));
    gw.cleanup().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_on_sqlite() {
    bad_requests_get_a_clear_error(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_on_postgres() {
    bad_requests_get_a_clear_error(Stores::RedisPostgres).await;
}

/// Every `.route("PATH", get(..).post(..))` in the API's `routes` function: (method, path),
/// read from the source however rustfmt wraps it.
fn routes_in_source() -> Vec<(String, String)> {
    let source = std::fs::read_to_string(common::manifest_dir().join("src/server/admin_api.rs"))
        .expect("read admin_api.rs");
    let (_, body) = source
        .split_once("pub fn routes(")
        .expect("a routes function");
    let (body, _) = body
        .split_once("\n}\n")
        .expect("the end of the routes function");
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut routes = Vec::new();
    for call in flat.split(".route(").skip(1) {
        let call = call.split(".route_layer(").next().unwrap_or(call);
        let (path, handlers) = call
            .trim_start()
            .strip_prefix('"')
            .and_then(|rest| rest.split_once('"'))
            .expect("a quoted path");
        for method in ["get", "post", "put", "patch", "delete"] {
            if handlers.contains(&format!(" {method}("))
                || handlers.contains(&format!(".{method}("))
            {
                routes.push((method.to_string(), path.to_string()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let gw = start(Stores::MemorySqlite).await;
    let (status, document) = admin(&gw, "GET", "/admin/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    assert_eq!(
        document["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    let routes = routes_in_source();
    assert!(routes.len() >= 9, "the route reader found only {routes:?}");
    for (method, path) in &routes {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is served but missing from the OpenAPI document"
        );
    }
    // And the document names no route the file does not serve.
    let documented: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|methods| methods.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(documented, routes.len(), "{}", document["paths"]);
    gw.cleanup().await;
}
