//! The admin HTTP API under `/admin/api/v1`: contacts (list with a cursor, get, create or
//! replace), consent (opt out, opt in, the log) and segments (names, counts), with its
//! OpenAPI 3.1 document generated from this file (utoipa) at `/admin/openapi.json`.
//!
//! Every route, the document included, takes `Authorization: Bearer <admin.token>` and
//! nothing else: no loopback exception, 401 without the header, 403 with a wrong token (or
//! when no token is configured). Bodies and values are checked by the contact list's rules
//! ([`ContactSchema`]): malformed JSON is a 400, a value the rules refuse a 422, both as
//! `{ "error": "..." }`. Answers carry numbers (an admin asks about one), but nothing here
//! logs a number, a name or a field value. It owns no SQL and no wire format of a channel;
//! erasing a contact is not offered yet (the result store has no erasure).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::auth::Guard;
use super::{AppState, json_error};
use crate::contacts::consent::ConsentActor;
use crate::contacts::segment::{Segment, Segments};
use crate::contacts::{ContactSchema, Field, ValueError};
use crate::dispatcher::now_ms;
use crate::result_store::{ConsentRecord, ConsentSource, ContactBatch, ContactRecord};
use crate::telemetry;

/// Contacts a list page holds when the caller does not say.
const DEFAULT_LIMIT: usize = 100;
/// The most contacts one list page may hold.
const MAX_LIMIT: usize = 1000;
/// The most contacts one segment-filtered page reads before it answers (with a cursor to
/// go on): a rare segment never makes one request walk the whole list.
const MAX_SCANNED: usize = 10_000;
/// Who the consent log names for a change made through this API.
const API_ACTOR: &str = "admin";

/// The API's routes behind the bearer check, to merge into the gateway's router.
pub fn routes(guard: Arc<Guard>) -> Router<AppState> {
    Router::new()
        .route(
            "/admin/api/v1/contacts",
            get(list_contacts).post(put_contact),
        )
        .route("/admin/api/v1/contacts/{msisdn}", get(get_contact))
        .route("/admin/api/v1/contacts/{msisdn}/opt-out", post(opt_out))
        .route("/admin/api/v1/contacts/{msisdn}/opt-in", post(opt_in))
        .route("/admin/api/v1/contacts/{msisdn}/consent", get(consent_log))
        .route("/admin/api/v1/segments", get(list_segments))
        .route("/admin/api/v1/segments/{name}/count", get(count_segment))
        .route("/admin/openapi.json", get(openapi_json))
        .route_layer(axum::middleware::from_fn_with_state(guard, bearer_only))
}

/// Middleware: lets a request on only with the admin token as a bearer token.
async fn bearer_only(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => {
            let mut refused = json_error(
                StatusCode::UNAUTHORIZED,
                "send the admin token: `Authorization: Bearer <admin.token>`",
            );
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            refused
        }
        Some(token) if guard.is_admin_token(token) => next.run(request).await,
        Some(_) => json_error(
            StatusCode::FORBIDDEN,
            "the bearer token is not the admin token (admin.token or BARAZA_ADMIN_TOKEN)",
        ),
    }
}

/// An error answer: `{ "error": "..." }`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// What was wrong, in a sentence (never quotes a number).
    pub error: String,
}

/// A number's consent as it stands, or one entry of its log.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    /// `opted_in` or `opted_out`.
    pub status: String,
    /// What set it: `import`, `keyword`, `flow`, `api`, `inbound` or `session_store`.
    pub source: String,
    /// The channel it came over, when it came from the citizen.
    pub channel: Option<String>,
    /// Who made the change, when not the citizen.
    pub by: Option<String>,
    /// When, in ms since the epoch.
    pub at_ms: i64,
}

impl From<&ConsentRecord> for ConsentView {
    fn from(consent: &ConsentRecord) -> ConsentView {
        ConsentView {
            status: consent.status.as_str().to_string(),
            source: consent.source.as_str().to_string(),
            channel: consent.channel.clone(),
            by: consent.changed_by.clone(),
            at_ms: consent.at_ms,
        }
    }
}

/// One contact as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    /// The number in E.164: the contact's key.
    pub number: String,
    /// The number's pseudonym, as results and logs name it.
    pub contact: String,
    pub name: Option<String>,
    /// An ISO 639-1 code such as `sw`.
    pub language: Option<String>,
    /// `ussd`, `sms` or `voice`.
    pub channel: Option<String>,
    /// `female`, `male`, `intersex` or `other`.
    pub gender: Option<String>,
    pub birth_year: Option<i32>,
    /// Such as `20-24` or `35+`.
    pub age_band: Option<String>,
    /// Derived from the number's prefix.
    pub operator: Option<String>,
    /// Location and custom fields declared in config, in their stored form.
    pub fields: BTreeMap<String, String>,
    /// `None` when nothing is recorded for the number.
    pub consent: Option<ConsentView>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_seen_at_ms: Option<i64>,
}

impl ContactView {
    fn of(state: &AppState, contact: &ContactRecord) -> ContactView {
        ContactView {
            number: contact.msisdn.clone(),
            contact: state.gateway.pseudonym(&contact.msisdn),
            name: contact.name.clone(),
            language: contact.language.clone(),
            channel: contact.channel.clone(),
            gender: contact.gender.clone(),
            birth_year: contact.birth_year,
            age_band: contact.age_band.clone(),
            operator: contact.operator.clone(),
            fields: contact.fields.clone(),
            consent: contact.consent.as_ref().map(ConsentView::from),
            created_at_ms: contact.created_at_ms,
            updated_at_ms: contact.updated_at_ms,
            last_seen_at_ms: contact.last_seen_at_ms,
        }
    }
}

/// One page of the contact list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    pub contacts: Vec<ContactView>,
    /// The cursor of the next page (`after=`), or `None` at the end of the list.
    pub next: Option<String>,
}

/// The query of `GET /contacts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next` cursor of the previous page; from the start when absent.
    pub after: Option<String>,
    /// Contacts per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// Only the contacts of this segment (a page may then hold fewer than `limit` and
    /// still have a `next`).
    pub segment: Option<String>,
}

/// A declared field's value: text, or a number for number fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FieldValue {
    Text(String),
    Number(f64),
}

impl FieldValue {
    fn text(&self) -> String {
        match self {
            FieldValue::Text(text) => text.clone(),
            FieldValue::Number(n) => n.to_string(),
        }
    }
}

/// The body of `POST /contacts`: the whole contact (what is left out is cleared). Values
/// are read the way an import reads them (`Mwanamke` is `female`, `0712 345 678` is
/// `+254712345678`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    /// The number in any usual form; stored in E.164.
    pub number: String,
    pub name: Option<String>,
    pub language: Option<String>,
    pub channel: Option<String>,
    pub gender: Option<String>,
    pub birth_year: Option<i32>,
    pub age_band: Option<String>,
    /// Location and custom fields declared in config, by name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldValue>,
}

/// What a consent change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentChanged {
    /// Whether the stored consent changed (and a log entry was written).
    pub changed: bool,
    pub consent: Option<ConsentView>,
}

/// A number's consent and its audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentLog {
    pub consent: Option<ConsentView>,
    /// Every change, oldest first.
    pub log: Vec<ConsentView>,
}

/// The segments file's segment names, in file order.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentList {
    pub segments: Vec<String>,
}

/// The query of `GET /segments/{name}/count`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountQuery {
    /// Also count by this field's values (`county`, `gender`...).
    pub by: Option<String>,
}

/// How many contacts a segment holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentCount {
    pub segment: String,
    pub total: u64,
    /// Per value of `by` (`(missing)` for none), when asked.
    pub by: Option<BTreeMap<String, u64>>,
}

/// The OpenAPI document of this file's routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baraza admin API",
        description = "Contacts, consent and segments. Every route needs `Authorization: Bearer <admin.token>`."
    ),
    paths(
        list_contacts,
        put_contact,
        get_contact,
        opt_out,
        opt_in,
        consent_log,
        list_segments,
        count_segment,
        openapi_json
    ),
    modifiers(&BearerToken),
    security(("admin_token" = []))
)]
pub struct AdminApiDoc;

/// Declares the bearer scheme every route takes.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A refused request: its status and a sentence, answered as `{ "error": "..." }`.
#[derive(Debug)]
struct Refused(StatusCode, String);

impl Refused {
    fn new(status: StatusCode, message: impl std::fmt::Display) -> Refused {
        Refused(status, message.to_string())
    }

    /// A store failure: counted, and answered 503 without the store's words (they can name
    /// hosts).
    fn store_unavailable() -> Refused {
        telemetry::error("admin_read");
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the result store cannot be reached now; try again",
        )
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        json_error(self.0, self.1)
    }
}

impl From<PathRejection> for Refused {
    fn from(rejection: PathRejection) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

impl From<QueryRejection> for Refused {
    fn from(rejection: QueryRejection) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

/// What a route answers: its JSON, or a refusal.
type Answer = Result<Response, Refused>;

/// The contact number in a path, in E.164, or a 400 saying why it cannot be read.
fn contact_number(schema: &ContactSchema, raw: &str) -> Result<String, Refused> {
    schema
        .normalise_number(raw)
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, format!("number: {e}")))
}

/// A number for consent: any readable number, of an accepted country or not (an opt-out
/// holds for every number), or a 400.
fn consent_number(schema: &ContactSchema, raw: &str) -> Result<String, Refused> {
    match schema.normalise_number(raw) {
        Ok(_) | Err(ValueError::CountryNotAccepted { .. }) => Ok(schema.consent_key(raw)),
        Err(e) => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!("number: {e}"),
        )),
    }
}

async fn stored_contact(state: &AppState, msisdn: &str) -> Result<Option<ContactRecord>, Refused> {
    let found = state
        .gateway
        .results
        .contacts_by_msisdn(&[msisdn.to_string()])
        .await
        .map_err(|_| Refused::store_unavailable())?;
    Ok(found.into_iter().next())
}

/// The segments file, checked; a missing file is no segments.
fn load_segments(state: &AppState) -> Result<Segments, Refused> {
    let path = crate::contacts::command::segments_path(&state.gateway.config);
    if !path.exists() {
        return Ok(Segments::default());
    }
    Segments::load(&path, &state.gateway.contacts).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the segments file does not check: {}", lines.join("; ")),
        )
    })
}

fn segment_named<'a>(segments: &'a Segments, name: &str) -> Result<&'a Segment, Refused> {
    segments
        .get(name)
        .map_err(|e| Refused::new(StatusCode::NOT_FOUND, e))
}

/// Lists contacts in number order, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/api/v1/contacts",
    tag = "contacts",
    params(ListQuery),
    responses(
        (status = 200, description = "One page; follow `next` for the rest", body = ContactPage),
        (status = 400, description = "A bad query", body = ApiError),
        (status = 404, description = "No such segment", body = ApiError),
    )
)]
async fn list_contacts(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!("limit: between 1 and {MAX_LIMIT}"),
        ));
    }
    let segments = match &query.segment {
        Some(_) => Some(load_segments(&state)?),
        None => None,
    };
    let segment = match (&segments, &query.segment) {
        (Some(segments), Some(name)) => Some(segment_named(segments, name)?),
        _ => None,
    };
    let page = contacts_after(&state, query.after, limit, segment).await?;
    Ok(axum::Json(page).into_response())
}

/// Up to `limit` contacts after the cursor (of `segment`, when given), reading at most
/// [`MAX_SCANNED`] contacts.
async fn contacts_after(
    state: &AppState,
    mut after: Option<String>,
    limit: usize,
    segment: Option<&Segment>,
) -> Result<ContactPage, Refused> {
    let (schema, now) = (&state.gateway.contacts, now_ms());
    let mut contacts = Vec::new();
    let mut scanned = 0;
    loop {
        let page = state
            .gateway
            .results
            .contacts_page(after.as_deref(), limit)
            .await
            .map_err(|_| Refused::store_unavailable())?;
        let at_end = page.len() < limit;
        scanned += page.len();
        for contact in page {
            after = Some(contact.msisdn.clone());
            if segment.is_none_or(|s| s.contains(schema, &contact, now)) {
                contacts.push(ContactView::of(state, &contact));
                if contacts.len() == limit {
                    return Ok(ContactPage {
                        contacts,
                        next: after,
                    });
                }
            }
        }
        if at_end || scanned >= MAX_SCANNED {
            let next = if at_end { None } else { after };
            return Ok(ContactPage { contacts, next });
        }
    }
}

/// One contact by number (any usual form).
#[utoipa::path(
    get,
    path = "/admin/api/v1/contacts/{msisdn}",
    tag = "contacts",
    params(("msisdn" = String, Path, description = "The number, E.164 or any usual form")),
    responses(
        (status = 200, body = ContactView),
        (status = 400, description = "An unreadable number", body = ApiError),
        (status = 404, description = "Not a contact", body = ApiError),
    )
)]
async fn get_contact(
    State(state): State<AppState>,
    msisdn: Result<Path<String>, PathRejection>,
) -> Answer {
    let Path(raw) = msisdn?;
    let msisdn = contact_number(&state.gateway.contacts, &raw)?;
    match stored_contact(&state, &msisdn).await? {
        Some(contact) => Ok(axum::Json(ContactView::of(&state, &contact)).into_response()),
        None => Err(Refused::new(
            StatusCode::NOT_FOUND,
            "no contact has this number",
        )),
    }
}

/// The contact a body describes, checked by the contact list's rules; every problem, each
/// naming its field.
fn contact_of(
    schema: &ContactSchema,
    body: &ContactBody,
    now: i64,
) -> Result<ContactRecord, Vec<String>> {
    let mut problems = Vec::new();
    let mut contact = ContactRecord {
        created_at_ms: now,
        updated_at_ms: now,
        ..ContactRecord::default()
    };
    match schema.normalise_number(&body.number) {
        Ok(msisdn) => {
            contact.operator = schema.operator_of(&msisdn).map(str::to_string);
            contact.msisdn = msisdn;
        }
        Err(e) => problems.push(format!("number: {e}")),
    }
    let declared = body.fields.iter().map(|(name, value)| {
        let field = schema
            .field_named(name)
            .filter(|f| matches!(f, Field::Declared(_)));
        (field.ok_or(name), Some(value.text()))
    });
    let built_in = [
        (Field::Name, body.name.clone()),
        (Field::Language, body.language.clone()),
        (Field::Channel, body.channel.clone()),
        (Field::Gender, body.gender.clone()),
        (Field::BirthYear, body.birth_year.map(|y| y.to_string())),
        (Field::AgeBand, body.age_band.clone()),
    ]
    .into_iter()
    .map(|(field, value)| (Ok(field), value));
    let this_year = crate::contacts::dates::Date::of_ms(now).year;
    for (field, value) in built_in.chain(declared) {
        let field = match field {
            Ok(field) => field,
            Err(name) => {
                problems.push(undeclared(schema, name));
                continue;
            }
        };
        match value.map(|v| schema.normalise_value(field, &v, this_year)) {
            Some(Ok(Some(value))) => {
                crate::contacts::import::set_value(schema, &mut contact, field, value)
            }
            Some(Ok(None)) | None => {}
            Some(Err(e)) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(contact)
    } else {
        Err(problems)
    }
}

/// Why `fields.NAME` is refused: the declared fields it could have been.
fn undeclared(schema: &ContactSchema, name: &str) -> String {
    let names: Vec<&str> = schema.declared().iter().map(|d| d.name.as_str()).collect();
    let declared = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    format!("fields.{name}: not a declared field (declared: {declared})")
}

/// Creates a contact, or replaces a stored one's fields (its consent and times stay).
#[utoipa::path(
    post,
    path = "/admin/api/v1/contacts",
    tag = "contacts",
    request_body = ContactBody,
    responses(
        (status = 201, description = "Created", body = ContactView),
        (status = 200, description = "Updated, or already as given", body = ContactView),
        (status = 400, description = "Not a JSON contact", body = ApiError),
        (status = 422, description = "A value the contact rules refuse", body = ApiError),
    )
)]
async fn put_contact(State(state): State<AppState>, body: Bytes) -> Answer {
    let body: ContactBody = serde_json::from_slice(&body)
        .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    let schema = &state.gateway.contacts;
    let mut contact = contact_of(schema, &body, now_ms())
        .map_err(|problems| Refused::new(StatusCode::UNPROCESSABLE_ENTITY, problems.join("; ")))?;
    let stored = stored_contact(&state, &contact.msisdn).await?;
    if let Some(stored) = &stored {
        contact.created_at_ms = stored.created_at_ms;
        contact.last_seen_at_ms = stored.last_seen_at_ms;
        contact.consent.clone_from(&stored.consent);
        let unchanged = ContactRecord {
            updated_at_ms: stored.updated_at_ms,
            ..contact.clone()
        };
        if &unchanged == stored {
            return Ok(axum::Json(ContactView::of(&state, stored)).into_response());
        }
    }
    let msisdn = contact.msisdn.clone();
    let batch = ContactBatch {
        contacts: vec![contact],
        consent: Vec::new(),
    };
    state
        .gateway
        .results
        .write_contacts(batch)
        .await
        .map_err(|_| Refused::store_unavailable())?;
    let status = if stored.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let written = stored_contact(&state, &msisdn)
        .await?
        .ok_or_else(Refused::store_unavailable)?;
    Ok((status, axum::Json(ContactView::of(&state, &written))).into_response())
}

/// Which way a consent route changes consent.
#[derive(Debug, Clone, Copy)]
enum Change {
    OptOut,
    OptIn,
}

async fn change_consent(
    state: AppState,
    path: Result<Path<String>, PathRejection>,
    change: Change,
) -> Answer {
    let Path(raw) = path?;
    let key = consent_number(&state.gateway.contacts, &raw)?;
    let actor = ConsentActor {
        source: ConsentSource::Api,
        channel: None,
        by: Some(API_ACTOR.to_string()),
    };
    let consent = state.gateway.consent();
    let changed = match change {
        Change::OptOut => consent.opt_out(&key, &actor, now_ms()).await,
        Change::OptIn => consent.opt_in(&key, &actor, now_ms()).await,
    }
    .map_err(|_| Refused::store_unavailable())?;
    let now = state
        .gateway
        .results
        .consent_of(&key)
        .await
        .map_err(|_| Refused::store_unavailable())?;
    Ok(axum::Json(ConsentChanged {
        changed,
        consent: now.as_ref().map(ConsentView::from),
    })
    .into_response())
}

/// Opts a number out (source `api`, by `admin`): nothing is sent to it any more. Any
/// readable number, a contact or not.
#[utoipa::path(
    post,
    path = "/admin/api/v1/contacts/{msisdn}/opt-out",
    tag = "consent",
    params(("msisdn" = String, Path, description = "The number, E.164 or any usual form")),
    responses(
        (status = 200, body = ConsentChanged),
        (status = 400, description = "An unreadable number", body = ApiError),
    )
)]
async fn opt_out(
    State(state): State<AppState>,
    msisdn: Result<Path<String>, PathRejection>,
) -> Answer {
    change_consent(state, msisdn, Change::OptOut).await
}

/// Opts a number back in (source `api`, by `admin`), undoing an opt-out.
#[utoipa::path(
    post,
    path = "/admin/api/v1/contacts/{msisdn}/opt-in",
    tag = "consent",
    params(("msisdn" = String, Path, description = "The number, E.164 or any usual form")),
    responses(
        (status = 200, body = ConsentChanged),
        (status = 400, description = "An unreadable number", body = ApiError),
    )
)]
async fn opt_in(
    State(state): State<AppState>,
    msisdn: Result<Path<String>, PathRejection>,
) -> Answer {
    change_consent(state, msisdn, Change::OptIn).await
}

/// A number's consent and every change to it, oldest first (empty for a number with none).
#[utoipa::path(
    get,
    path = "/admin/api/v1/contacts/{msisdn}/consent",
    tag = "consent",
    params(("msisdn" = String, Path, description = "The number, E.164 or any usual form")),
    responses(
        (status = 200, body = ConsentLog),
        (status = 400, description = "An unreadable number", body = ApiError),
    )
)]
async fn consent_log(
    State(state): State<AppState>,
    msisdn: Result<Path<String>, PathRejection>,
) -> Answer {
    let Path(raw) = msisdn?;
    let key = consent_number(&state.gateway.contacts, &raw)?;
    let results = &state.gateway.results;
    let (consent, log) = match (
        results.consent_of(&key).await,
        results.consent_log(&key).await,
    ) {
        (Ok(consent), Ok(log)) => (consent, log),
        _ => return Err(Refused::store_unavailable()),
    };
    Ok(axum::Json(ConsentLog {
        consent: consent.as_ref().map(ConsentView::from),
        log: log.iter().map(|c| ConsentView::from(&c.consent)).collect(),
    })
    .into_response())
}

/// The segments file's segment names (none when there is no file).
#[utoipa::path(
    get,
    path = "/admin/api/v1/segments",
    tag = "segments",
    responses(
        (status = 200, body = SegmentList),
        (status = 500, description = "The segments file does not check", body = ApiError),
    )
)]
async fn list_segments(State(state): State<AppState>) -> Answer {
    let segments = load_segments(&state)?;
    Ok(axum::Json(SegmentList {
        segments: segments.segments.into_iter().map(|s| s.name).collect(),
    })
    .into_response())
}

/// How many contacts a segment holds (opted-out ones never count), optionally by field.
#[utoipa::path(
    get,
    path = "/admin/api/v1/segments/{name}/count",
    tag = "segments",
    params(("name" = String, Path, description = "The segment's name"), CountQuery),
    responses(
        (status = 200, body = SegmentCount),
        (status = 400, description = "An unknown `by` field", body = ApiError),
        (status = 404, description = "No such segment", body = ApiError),
    )
)]
async fn count_segment(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<CountQuery>, QueryRejection>,
) -> Answer {
    let (Path(name), Query(query)) = (name?, query?);
    let schema = &state.gateway.contacts;
    let by = match query.by.as_deref() {
        None => None,
        Some(f) => Some(schema.field_named(f).ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "by: `{f}` is not a field (fields: {})",
                    schema.field_names().join(", ")
                ),
            )
        })?),
    };
    let segments = load_segments(&state)?;
    let segment = segment_named(&segments, &name)?;
    let counts = crate::contacts::export::count_contacts(
        &state.gateway.results,
        schema,
        segment,
        by,
        now_ms(),
    )
    .await
    .map_err(|_| Refused::store_unavailable())?;
    Ok(axum::Json(SegmentCount {
        segment: name,
        total: counts.values().sum(),
        by: by.map(|_| counts),
    })
    .into_response())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    axum::Json(AdminApiDoc::openapi()).into_response()
}
