//! Who may call which route: the admin token, and the proof each provider's callback carries
//! (an allowed address, a shared token in the URL, Twilio's `X-Twilio-Signature`).
//!
//! Decides, counts and logs; a refused callback gets 403 before it is parsed, so it stores
//! nothing. Never parses a callback beyond what a signature covers (the signature's form
//! fields belong to the TwiML channel file) and never touches a store.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tracing::warn;

use crate::config::{CallbackAuth, Config, Secret};
use crate::telemetry;

/// A provider whose callbacks the gateway serves: one account, one proof, whatever routes
/// (USSD, voice, end-of-session) it posts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackSource {
    AfricasTalking,
    Hubtel,
    /// TwiML callbacks: Twilio and the providers that speak its format and signature.
    Twilio,
}

impl CallbackSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackSource::AfricasTalking => "africastalking",
            CallbackSource::Hubtel => "hubtel",
            CallbackSource::Twilio => "twilio",
        }
    }
}

/// Why a callback was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client address is not on the provider's allow-list.
    Address,
    /// The `token` query parameter is missing or wrong.
    Token,
    /// `X-Twilio-Signature` is missing or does not match.
    Signature,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::Token => "token",
            Refusal::Signature => "signature",
        }
    }
}

/// One provider's proof, parsed from config once at start.
#[derive(Debug, Default)]
struct SourceRule {
    token: Option<Secret>,
    /// `token=...` for the URLs handed to the provider ([`CallbackAuth::url_query`]).
    query: Option<String>,
    allow_from: Vec<IpNet>,
    /// Twilio only: the auth token signatures are checked with.
    signing_key: Option<Secret>,
}

impl SourceRule {
    fn open(&self) -> bool {
        self.token.is_none() && self.allow_from.is_empty() && self.signing_key.is_none()
    }
}

/// The gateway's access rules, built from config at start.
#[derive(Debug)]
pub struct Guard {
    admin_token: Option<Secret>,
    trusted_proxies: Vec<IpNet>,
    africastalking: SourceRule,
    hubtel: SourceRule,
    twilio: SourceRule,
    /// The gateway's public address (`voice.public_url`): Twilio signs the URL it requested,
    /// which a reverse proxy may have rewritten on the way here.
    public_url: String,
}

/// Headers a reverse proxy adds; a loopback request carrying one came from elsewhere.
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

fn parse_nets(what: &str, entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{what}: `{entry}` is not an address or CIDR (e.g. 196.201.214.0/24)")
                })
        })
        .collect()
}

fn non_empty(secret: &Option<Secret>) -> Option<Secret> {
    secret.clone().filter(|s| !s.expose().trim().is_empty())
}

fn rule(name: &str, auth: &CallbackAuth) -> Result<SourceRule, String> {
    Ok(SourceRule {
        token: non_empty(&auth.token),
        query: auth.url_query(),
        allow_from: parse_nets(&format!("callbacks.{name}.allow_from"), &auth.allow_from)?,
        signing_key: None,
    })
}

impl Guard {
    /// The rules `config` sets; a bad CIDR is an error that names the entry.
    pub fn from_config(config: &Config) -> Result<Guard, String> {
        let callbacks = &config.callbacks;
        let mut twilio = rule("twilio", &callbacks.twilio)?;
        twilio.signing_key = non_empty(&callbacks.twilio.auth_token).or_else(|| {
            match config.voice.outbound.as_ref().map(|o| &o.provider) {
                Some(crate::config::OutboundProvider::Twilio { auth_token, .. }) => {
                    non_empty(&Some(auth_token.clone()))
                }
                _ => None,
            }
        });
        Ok(Guard {
            admin_token: non_empty(&config.admin.token),
            trusted_proxies: parse_nets("callbacks.trusted_proxies", &callbacks.trusted_proxies)?,
            africastalking: rule("africastalking", &callbacks.africastalking)?,
            hubtel: rule("hubtel", &callbacks.hubtel)?,
            twilio,
            public_url: config.voice.public_url.trim_end_matches('/').to_string(),
        })
    }

    fn rule(&self, source: CallbackSource) -> &SourceRule {
        match source {
            CallbackSource::AfricasTalking => &self.africastalking,
            CallbackSource::Hubtel => &self.hubtel,
            CallbackSource::Twilio => &self.twilio,
        }
    }

    /// Whether anyone who can reach the gateway may post this provider's callbacks.
    pub fn is_open(&self, source: CallbackSource) -> bool {
        self.rule(source).open()
    }

    /// `token=...` for the callback URLs the gateway itself hands to `source` (voice action
    /// URLs), so the provider's next callback passes the same check as its first.
    pub fn callback_query(&self, source: CallbackSource) -> Option<String> {
        self.rule(source).query.clone()
    }

    /// The address a request came from: the peer, or for a trusted proxy the right-most
    /// address in `X-Forwarded-For` that is not a trusted proxy itself.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }

    /// Whether a callback from `source` may go on. `path_and_query` is the request target as
    /// received, `body` the whole form body.
    pub fn check_callback(
        &self,
        source: CallbackSource,
        client: IpAddr,
        headers: &HeaderMap,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let rule = self.rule(source);
        if !rule.allow_from.is_empty() && !rule.allow_from.iter().any(|n| n.contains(&client)) {
            return Err(Refusal::Address);
        }
        if let Some(expected) = &rule.token {
            let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
            let given = crate::channels::form::form_fields(query.as_bytes())
                .ok()
                .and_then(|fields| fields.get("token").cloned());
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.expose().as_bytes()))
            {
                return Err(Refusal::Token);
            }
        }
        if let Some(key) = &rule.signing_key {
            let given = headers
                .get("x-twilio-signature")
                .and_then(|v| v.to_str().ok())
                .ok_or(Refusal::Signature)?;
            let url = format!("{}{}", self.public_url, path_and_query);
            let expected = crate::channels::voice::twiml::signature(key.expose(), &url, body)
                .map_err(|_| Refusal::Signature)?;
            if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
                return Err(Refusal::Signature);
            }
        }
        Ok(())
    }

    /// Whether `given` is the configured admin token (never, when none is configured): for
    /// routes that take the token alone, with no loopback exception.
    pub fn is_admin_token(&self, given: &str) -> bool {
        self.admin_token.as_ref().is_some_and(|token| {
            constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes())
        })
    }

    /// Whether a request may use the admin routes: the bearer token when one is configured;
    /// without one, a loopback peer whose request carries no forwarding header.
    pub fn admin(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        match &self.admin_token {
            Some(token) => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|given| {
                    constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes())
                }),
            None => {
                peer.ip().is_loopback()
                    && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
            }
        }
    }
}

/// Refuses to serve where the rules cannot hold: an address other hosts can reach with no
/// admin token (the admin routes would rest on a loopback check a proxy defeats), or, with
/// `callbacks.required`, a served provider route that anyone may post to.
pub fn check_exposure(config: &Config, guard: &Guard, listen: SocketAddr) -> Result<(), String> {
    if !listen.ip().is_loopback() && guard.admin_token.is_none() {
        return Err(format!(
            "listening on {listen}, which other hosts can reach, needs an admin token: set \
             admin.token or BARAZA_ADMIN_TOKEN (or listen on 127.0.0.1 behind a proxy)"
        ));
    }
    let open: Vec<&str> = served_sources(config)
        .into_iter()
        .filter(|s| guard.is_open(*s))
        .map(CallbackSource::as_str)
        .collect();
    if config.callbacks.required && !open.is_empty() {
        return Err(format!(
            "callbacks.required is set but these providers' callbacks are unauthenticated: {}; \
             give each a token (BARAZA_CALLBACK_TOKEN_<PROVIDER>), an allow_from list, or for \
             Twilio the auth token (BARAZA_TWILIO_AUTH_TOKEN)",
            open.join(", ")
        ));
    }
    for source in open {
        warn!(
            provider = source,
            "callbacks from this provider are not authenticated: anyone who can reach the \
             gateway can post them (set callbacks.{source}.token or allow_from)"
        );
    }
    Ok(())
}

/// The providers whose callback routes this config serves.
pub fn served_sources(config: &Config) -> Vec<CallbackSource> {
    use crate::channels::ussd::UssdProvider;
    use crate::channels::voice::VoiceProvider;
    let mut sources = Vec::new();
    for provider in &config.ussd.providers {
        match provider {
            UssdProvider::AfricasTalking => sources.push(CallbackSource::AfricasTalking),
            UssdProvider::Hubtel => sources.push(CallbackSource::Hubtel),
            UssdProvider::Smpp => {}
        }
    }
    for provider in &config.voice.providers {
        match provider {
            VoiceProvider::AfricasTalking => sources.push(CallbackSource::AfricasTalking),
            VoiceProvider::Twiml => sources.push(CallbackSource::Twilio),
        }
    }
    for route in &config.smpp.http_routes {
        match route {
            crate::config::SmsRouteConfig::AfricasTalking(_) => {
                sources.push(CallbackSource::AfricasTalking)
            }
        }
    }
    sources.dedup();
    sources.sort_by_key(|s| s.as_str());
    sources.dedup();
    sources
}

/// What the callback middleware needs: the rules, which provider the routes belong to, and
/// the body limit (the body is read here, before the route's own extractor).
#[derive(Clone)]
pub struct CallbackCheck {
    pub guard: Arc<Guard>,
    pub source: CallbackSource,
    pub max_body: usize,
}

/// Middleware in front of a provider's callback routes: a refused callback gets 403, a
/// metric and a log line, and never reaches the route.
pub async fn callbacks_only(
    State(check): State<CallbackCheck>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, check.max_body).await {
        Ok(bytes) => bytes,
        Err(_) => {
            telemetry::error("bad_request");
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
        }
    };
    let client = check.guard.client_addr(peer.ip(), &parts.headers);
    let target = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    if let Err(refusal) =
        check
            .guard
            .check_callback(check.source, client, &parts.headers, &target, &bytes)
    {
        telemetry::callback_refused(check.source.as_str(), refusal.as_str());
        warn!(
            provider = check.source.as_str(),
            reason = refusal.as_str(),
            %client,
            path = parts.uri.path(),
            "callback refused"
        );
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Compares two secrets in time that depends on their length only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(tweak: impl FnOnce(&mut Config)) -> Guard {
        let mut config = Config::embedded();
        tweak(&mut config);
        Guard::from_config(&config).expect("valid rules")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_token_in_the_query_is_required_and_compared_whole() {
        let g = guard(|c| c.callbacks.hubtel.token = Some("s3cr3t".into()));
        let check = |target: &str| {
            g.check_callback(
                CallbackSource::Hubtel,
                ip("10.0.0.1"),
                &HeaderMap::new(),
                target,
                b"",
            )
        };
        assert_eq!(check("/ussd/hubtel?token=s3cr3t"), Ok(()));
        assert_eq!(check("/ussd/hubtel?a=1&token=s3cr3t"), Ok(()));
        assert_eq!(check("/ussd/hubtel"), Err(Refusal::Token));
        assert_eq!(check("/ussd/hubtel?token=s3cr3"), Err(Refusal::Token));
        assert_eq!(check("/ussd/hubtel?token=s3cr3tt"), Err(Refusal::Token));
        assert_eq!(check("/ussd/hubtel?token=%ZZ"), Err(Refusal::Token));
        // Another provider's rule is its own.
        assert_eq!(
            g.check_callback(
                CallbackSource::AfricasTalking,
                ip("10.0.0.1"),
                &HeaderMap::new(),
                "/ussd/africastalking",
                b""
            ),
            Ok(())
        );
    }

    #[test]
    fn allow_lists_take_cidrs_and_single_addresses() {
        let g = guard(|c| {
            c.callbacks.africastalking.allow_from =
                vec!["196.201.214.0/24".into(), "2001:db8::1".into()]
        });
        let check = |client: &str| {
            g.check_callback(
                CallbackSource::AfricasTalking,
                ip(client),
                &HeaderMap::new(),
                "/",
                b"",
            )
        };
        assert_eq!(check("196.201.214.200"), Ok(()));
        assert_eq!(check("2001:db8::1"), Ok(()));
        assert_eq!(check("196.201.215.1"), Err(Refusal::Address));
        assert_eq!(check("127.0.0.1"), Err(Refusal::Address));
    }

    #[test]
    fn a_bad_cidr_is_named() {
        let mut config = Config::embedded();
        config.callbacks.trusted_proxies = vec!["10.0.0.0/33".into()];
        let error = Guard::from_config(&config).expect_err("refused");
        assert!(error.contains("`10.0.0.0/33`"), "{error}");
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let g = guard(|c| c.callbacks.trusted_proxies = vec!["127.0.0.1".into()]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.1.1.1, 196.201.214.9, 127.0.0.1".parse().expect("header"),
        );
        assert_eq!(
            g.client_addr(ip("127.0.0.1"), &headers),
            ip("196.201.214.9")
        );
        // From an untrusted peer the header is a claim anyone can make.
        assert_eq!(g.client_addr(ip("8.8.8.8"), &headers), ip("8.8.8.8"));
    }

    #[test]
    fn without_a_token_only_direct_loopback_is_admin() {
        let g = guard(|_| {});
        let local = SocketAddr::from(([127, 0, 0, 1], 5000));
        let remote = SocketAddr::from(([10, 0, 0, 2], 5000));
        assert!(g.admin(local, &HeaderMap::new()));
        assert!(!g.admin(remote, &HeaderMap::new()));
        for name in FORWARDING_HEADERS {
            let mut headers = HeaderMap::new();
            headers.insert(*name, "10.0.0.2".parse().expect("header"));
            assert!(!g.admin(local, &headers), "{name} from a proxy on the host");
        }
    }

    #[test]
    fn with_a_token_the_peer_does_not_matter() {
        let g = guard(|c| c.admin.token = Some("t0ken".into()));
        let local = SocketAddr::from(([127, 0, 0, 1], 5000));
        let mut headers = HeaderMap::new();
        assert!(!g.admin(local, &headers), "loopback alone is not enough");
        headers.insert(
            header::AUTHORIZATION,
            "Bearer t0ken".parse().expect("header"),
        );
        assert!(g.admin(SocketAddr::from(([10, 0, 0, 2], 1)), &headers));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer t0ke".parse().expect("header"),
        );
        assert!(!g.admin(local, &headers));
    }

    #[test]
    fn a_reachable_address_needs_an_admin_token() {
        let config = Config::embedded();
        let g = Guard::from_config(&config).expect("rules");
        let public = SocketAddr::from(([0, 0, 0, 0], 8080));
        let error = check_exposure(&config, &g, public).expect_err("refused");
        assert!(error.contains("admin token"), "{error}");
        assert!(check_exposure(&config, &g, SocketAddr::from(([127, 0, 0, 1], 8080))).is_ok());
        let mut config = Config::embedded();
        config.admin.token = Some("t".into());
        let g = Guard::from_config(&config).expect("rules");
        assert!(check_exposure(&config, &g, public).is_ok());
        // An empty token is no token.
        config.admin.token = Some("  ".into());
        let g = Guard::from_config(&config).expect("rules");
        assert!(check_exposure(&config, &g, public).is_err());
    }

    #[test]
    fn required_callbacks_name_each_open_provider() {
        let mut config = Config::embedded();
        config.callbacks.required = true;
        config.callbacks.hubtel.token = Some("x".into());
        let g = Guard::from_config(&config).expect("rules");
        let local = SocketAddr::from(([127, 0, 0, 1], 8080));
        let error = check_exposure(&config, &g, local).expect_err("refused");
        assert!(error.contains("africastalking, twilio"), "{error}");
        config.callbacks.africastalking.allow_from = vec!["10.0.0.0/8".into()];
        config.callbacks.twilio.auth_token = Some("tok".into());
        let g = Guard::from_config(&config).expect("rules");
        assert!(check_exposure(&config, &g, local).is_ok());
    }
}
