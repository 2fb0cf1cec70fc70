//! Gateway configuration: `gateway-config/*.yaml` (or the embedded defaults) into typed values.
//!
//! Closed enums for the stores and providers, so adding one makes the compiler list every place
//! that builds from config. Secrets may come from the environment (`BARAZA_REDIS_URL`,
//! `BARAZA_POSTGRES_URL`, `BARAZA_PSEUDONYM_SECRET`, `BARAZA_ADMIN_TOKEN`). Reading config never
//! starts anything; `server` builds the running parts from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::channels::ussd::UssdProvider;
use crate::channels::voice::VoiceProvider;
use crate::flow::model::Text;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on (the `--listen` flag overrides it).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Folder of flow files, relative to the config file's folder or absolute.
    #[serde(default = "default_flows_dir")]
    pub flows_dir: PathBuf,
    /// How often this node asks the result store for flow versions and retirements other
    /// nodes published (a reload on one node reaches the others within this), milliseconds.
    #[serde(default = "default_flows_poll_ms")]
    pub flows_poll_ms: u64,
    #[serde(default)]
    pub sessions: SessionsConfig,
    #[serde(default)]
    pub results: ResultsConfig,
    /// Certificates for TLS to the stores (a `rediss://` sessions URL, the results URL's
    /// `sslmode`); the URLs decide whether TLS is used, these files what it trusts.
    #[serde(default)]
    pub store_tls: StoreTlsConfig,
    #[serde(default)]
    pub ussd: UssdConfig,
    #[serde(default)]
    pub voice: VoiceConfig,
    #[serde(default)]
    pub smpp: SmppConfig,
    #[serde(default)]
    pub admission: AdmissionConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Who may post provider callbacks (shared tokens, address allow-lists, Twilio's
    /// signature); checked before a callback is parsed.
    #[serde(default)]
    pub callbacks: CallbacksConfig,
    /// Secret for pseudonymising phone numbers in logs and exports (HMAC-SHA256).
    #[serde(default)]
    pub pseudonym_secret: Option<Secret>,
    /// The contact list: how numbers are read, which fields a contact has, segments.
    #[serde(default)]
    pub contacts: ContactsConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_flows_dir() -> PathBuf {
    PathBuf::from("flows")
}

fn default_flows_poll_ms() -> u64 {
    5_000
}

/// Where sessions live.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, tag = "store", rename_all = "snake_case")]
pub enum SessionsConfig {
    /// In this process only: for development and a single node.
    #[default]
    Memory,
    /// Redis, shared by every gateway node.
    Redis {
        /// `redis://` URL, or `rediss://` for TLS (see [`Config::store_tls`]);
        /// `BARAZA_REDIS_URL` overrides it. It may hold a password, so it is never printed.
        #[serde(default)]
        url: Option<Secret>,
        /// Prefix of every key (several deployments may share one Redis).
        #[serde(default = "default_prefix")]
        key_prefix: String,
        /// Per-command response timeout, in milliseconds.
        #[serde(default = "default_redis_timeout")]
        response_timeout_ms: u64,
        /// How many USSD sessions this node keeps its own copy of, so that the next step of a
        /// session that comes back to it needs one Redis round trip instead of two (the save
        /// still checks the version, so a copy another node made stale is never used for
        /// good). 0 turns the copies off.
        #[serde(default = "default_node_cache_entries")]
        node_cache_entries: usize,
    },
}

fn default_node_cache_entries() -> usize {
    20_000
}

fn default_prefix() -> String {
    "baraza".into()
}

fn default_redis_timeout() -> u64 {
    500
}

/// Where answers are stored durably.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "store", rename_all = "snake_case")]
pub enum ResultsConfig {
    /// Embedded SQLite (WAL) file.
    Sqlite {
        #[serde(default = "default_sqlite_path")]
        path: PathBuf,
    },
    /// PostgreSQL, for multi-node deployments; `BARAZA_POSTGRES_URL` overrides `url`.
    Postgres {
        /// May hold a password, so it is never printed. Its `sslmode` (`disable`, `prefer`,
        /// the default, `require`, `verify-ca`, `verify-full`) decides TLS, with libpq's
        /// meaning; see [`Config::store_tls`] for what the server's certificate must chain to.
        #[serde(default)]
        url: Option<Secret>,
        /// Schema to use (created if missing).
        #[serde(default)]
        schema: Option<String>,
    },
}

impl Default for ResultsConfig {
    fn default() -> Self {
        ResultsConfig::Sqlite {
            path: default_sqlite_path(),
        }
    }
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("data/results.sqlite3")
}

/// The certificate files of the TLS connections to Redis and to PostgreSQL.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreTlsConfig {
    /// Used when `sessions.url` is `rediss://` (and refused with a plain `redis://` URL, where
    /// it would silently do nothing).
    pub redis: TlsFiles,
    /// Used when the results URL's `sslmode` asks for TLS.
    pub postgres: TlsFiles,
}

/// PEM files for one TLS client: whom to trust, and optionally who we are. Relative paths are
/// taken from the config file's folder. Read once at start (`crate::tls`); a missing or
/// malformed file stops the start with its name.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to, for a private CA; without
    /// it, the Mozilla roots built into the binary (webpki-roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// Private key of `client_cert_file` (PKCS#8, PKCS#1 or SEC1); only the path is ever
    /// printed.
    pub client_key_file: Option<PathBuf>,
}

impl TlsFiles {
    fn resolve(&mut self, base: &Path) {
        for file in [
            &mut self.ca_file,
            &mut self.client_cert_file,
            &mut self.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            *file = resolve(base, file);
        }
    }
}

/// USSD over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UssdConfig {
    /// The aggregators whose callback routes are served (all by default); adding a provider is
    /// one channel file and one variant here.
    pub providers: Vec<UssdProvider>,
    /// Service codes (and sub-codes) mapped to flows.
    pub service_codes: Vec<ServiceCode>,
    /// Longest time a step may take before the citizen gets a polite `END`.
    pub step_deadline_ms: u64,
    /// Shown when a code maps to no flow.
    pub unknown_service_message: Text,
    /// Shown when a step cannot be completed in time or a store fails.
    pub unavailable_message: Text,
    /// Shown when a number sends requests faster than admission allows.
    pub too_fast_message: Text,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for UssdConfig {
    fn default() -> Self {
        UssdConfig {
            providers: UssdProvider::ALL.to_vec(),
            service_codes: vec![
                ServiceCode { code: "*384*12#".into(), flow: "community_needs".into() },
                ServiceCode { code: "*384*12*1#".into(), flow: "community_needs".into() },
                ServiceCode { code: "*384*12*2#".into(), flow: "service_feedback".into() },
                ServiceCode { code: "*384*12*3#".into(), flow: "grievance".into() },
            ],
            step_deadline_ms: 2000,
            unknown_service_message: Text::PerLanguage(BTreeMap::from([
                ("en".into(), "Sorry, this service code is not in use.".into()),
                ("sw".into(), "Samahani, huduma hii haipatikani.".into()),
            ])),
            unavailable_message: Text::PerLanguage(BTreeMap::from([
                ("en".into(), "Sorry, the service is busy. Please dial again in a few minutes.".into()),
                ("sw".into(), "Samahani, huduma ina shughuli nyingi. Tafadhali piga tena baada ya dakika chache.".into()),
            ])),
            too_fast_message: Text::PerLanguage(BTreeMap::from([
                ("en".into(), "Sorry, too many requests from your number. Please wait a moment and dial again.".into()),
                ("sw".into(), "Samahani, maombi mengi kutoka namba yako. Tafadhali subiri kidogo kisha upige tena.".into()),
            ])),
            max_body_bytes: 16 * 1024,
        }
    }
}

/// One USSD code and the flow it starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCode {
    /// As dialled, e.g. `*384*12#` or the sub-code `*384*12*3#`.
    pub code: String,
    /// Flow id.
    pub flow: String,
}

/// Voice menus over the providers' webhooks (Africa's Talking Voice, TwiML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    /// The voice providers whose webhook routes are served (all by default).
    pub providers: Vec<VoiceProvider>,
    /// The address providers reach this gateway at: audio URLs and callback URLs in the XML
    /// replies are built from it (e.g. `https://baraza.example.org`). Empty (the default):
    /// the address the gateway listens on (see [`Config::settle_public_url`]).
    pub public_url: String,
    /// Folder of recorded prompts, served read-only at `/audio/...`; flows name files in it.
    pub audio_dir: PathBuf,
    /// Numbers called, mapped to the flow that answers them.
    pub numbers: Vec<VoiceNumber>,
    /// The flow for calls to a number not listed (none: such calls are rejected).
    pub default_flow: Option<String>,
    /// Said when a step cannot be completed (a store failed or the deadline passed).
    pub unavailable_message: Text,
    /// Numbers that are rejected unanswered and call the caller back (free for the caller).
    pub missed_call: MissedCallConfig,
    /// How outbound calls are placed (missed-call callbacks); none: no outbound calls.
    pub outbound: Option<OutboundConfig>,
}

/// The missed-call trigger: which numbers, and the limits that keep it from being abused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissedCallConfig {
    /// Numbers to flash, each with the flow the callback runs.
    pub numbers: Vec<VoiceNumber>,
    /// A second missed call from the same number within this window gets no new callback.
    pub dedup_window_seconds: u64,
    /// Callbacks per caller per UTC day.
    pub daily_cap_per_number: u64,
    /// Callbacks per flow per UTC day (bounds the airtime spent).
    pub daily_cap_per_flow: u64,
}

impl Default for MissedCallConfig {
    fn default() -> Self {
        MissedCallConfig {
            numbers: Vec::new(),
            dedup_window_seconds: 600,
            daily_cap_per_number: 3,
            daily_cap_per_flow: 1000,
        }
    }
}

/// Outbound call placement through a provider's call API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The provider whose API places the calls.
    pub provider: OutboundProvider,
    /// Calls ringing or in progress at once; more wait in the queue.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Calls waiting to be placed; a callback beyond this is refused (logged and counted).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// A placed call holds its concurrency slot until its final status arrives, or this long.
    #[serde(default = "default_call_timeout_seconds")]
    pub call_timeout_seconds: u64,
    /// When and how often a call that did not connect is tried again.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_max_concurrent_calls() -> usize {
    5
}

fn default_queue_capacity() -> usize {
    1000
}

fn default_call_timeout_seconds() -> u64 {
    600
}

/// A provider's outbound call API and the account it is used with.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundProvider {
    /// Africa's Talking Voice `POST /call` (form `username`, `to`, `from`; header `apiKey`).
    #[serde(rename = "africastalking")]
    AfricasTalking {
        /// The call endpoint.
        #[serde(default = "default_at_call_url")]
        api_url: String,
        /// The Africa's Talking application user name.
        username: String,
        /// The API key; env `BARAZA_AT_API_KEY` overrides it (keep secrets out of files).
        #[serde(default)]
        api_key: Secret,
        /// The Africa's Talking voice number calls come from.
        from: String,
    },
    /// Twilio `POST /2010-04-01/Accounts/{sid}/Calls.json` (and compatible APIs).
    Twilio {
        /// The API base URL.
        #[serde(default = "default_twilio_url")]
        api_url: String,
        /// The account SID (also the basic-auth user).
        account_sid: String,
        /// The auth token; env `BARAZA_TWILIO_AUTH_TOKEN` overrides it.
        #[serde(default)]
        auth_token: Secret,
        /// The Twilio number calls come from.
        from: String,
    },
}

fn default_at_call_url() -> String {
    "https://voice.africastalking.com/call".into()
}

fn default_twilio_url() -> String {
    "https://api.twilio.com".into()
}

/// Retries of calls that did not connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait between an attempt's final status and the next attempt.
    pub spacing_seconds: u64,
    /// Which final statuses are tried again.
    pub on: Vec<RetryOn>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            spacing_seconds: 300,
            on: vec![RetryOn::Busy, RetryOn::NoAnswer, RetryOn::Failed],
        }
    }
}

/// A final call status that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The line was busy (or the call was rejected).
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// The provider could not place or connect the call.
    Failed,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            providers: vec![VoiceProvider::AfricasTalking, VoiceProvider::Twiml],
            public_url: String::new(),
            audio_dir: PathBuf::from("audio"),
            numbers: Vec::new(),
            default_flow: Some("service_feedback".into()),
            unavailable_message: Text::PerLanguage(BTreeMap::from([
                (
                    "en".into(),
                    "Sorry, the service is busy. Please call again later. Goodbye.".into(),
                ),
                (
                    "sw".into(),
                    "Samahani, huduma ina shughuli nyingi. Tafadhali piga tena baadaye. Kwaheri."
                        .into(),
                ),
            ])),
            missed_call: MissedCallConfig::default(),
            outbound: None,
        }
    }
}

/// One called number and its flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceNumber {
    /// As the provider sends it (E.164, e.g. `+254711082000`).
    pub number: String,
    /// Flow id.
    pub flow: String,
}

/// SMS (and USSD) over SMPP: the operators' SMSCs this gateway binds to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppConfig {
    /// This gateway node's name in the outbound SMS queue and in stored outbound call
    /// attempts: after a restart a node recovers only its own unfinished messages and calls,
    /// so nodes sharing one database need distinct names. Default: the host name.
    pub node: Option<String>,
    /// One entry per operator account.
    pub operators: Vec<OperatorConfig>,
    /// SMS routes through an aggregator's HTTP API (Africa's Talking), beside the SMPP
    /// operators: the outbound queue routes to them by prefix or name the same way (the
    /// operators are tried first, in order, then these).
    pub http_routes: Vec<SmsRouteConfig>,
    /// Words that start a flow by SMS (matched case-insensitively on the first word).
    pub keywords: Vec<Keyword>,
    /// Words that stop every message to the sender, on every channel, until a start word.
    pub stop_words: Vec<String>,
    /// Words that lift a stop.
    pub start_words: Vec<String>,
    /// Sent once after a stop word (the last message the number gets).
    pub stop_reply: Text,
    /// Sent after a start word.
    pub start_reply: Text,
    /// Sent when a message matches no keyword and no open session (none: no reply).
    pub unknown_reply: Option<Text>,
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            node: None,
            operators: Vec::new(),
            http_routes: Vec::new(),
            keywords: vec![
                Keyword {
                    keyword: "AFYA".into(),
                    flow: "service_feedback".into(),
                    language: Some("sw".into()),
                },
                Keyword {
                    keyword: "HEALTH".into(),
                    flow: "service_feedback".into(),
                    language: Some("en".into()),
                },
                Keyword {
                    keyword: "MAONI".into(),
                    flow: "community_needs".into(),
                    language: Some("sw".into()),
                },
                Keyword {
                    keyword: "SURVEY".into(),
                    flow: "community_needs".into(),
                    language: Some("en".into()),
                },
            ],
            stop_words: vec!["STOP".into(), "ACHA".into(), "SITISHA".into()],
            start_words: vec!["START".into(), "ANZA".into()],
            stop_reply: Text::PerLanguage(BTreeMap::from([
                (
                    "en".into(),
                    "You will get no more messages from us. Send START to receive them again."
                        .into(),
                ),
                (
                    "sw".into(),
                    "Hutapokea ujumbe zaidi kutoka kwetu. Tuma ANZA kupokea tena.".into(),
                ),
            ])),
            start_reply: Text::PerLanguage(BTreeMap::from([
                (
                    "en".into(),
                    "Welcome back. You will receive our messages again. Send STOP to stop.".into(),
                ),
                (
                    "sw".into(),
                    "Karibu tena. Utapokea ujumbe wetu tena. Tuma ACHA kusitisha.".into(),
                ),
            ])),
            unknown_reply: None,
        }
    }
}

/// An SMS route through an aggregator's HTTP API: one variant per provider (a closed set;
/// adding one is a variant here and a file in `src/sms/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider")]
pub enum SmsRouteConfig {
    /// Africa's Talking SMS (`POST {base_url}/version1/messaging`).
    #[serde(rename = "africastalking")]
    AfricasTalking(AtSmsRoute),
}

impl SmsRouteConfig {
    /// How the queue, commands and logs name the route.
    pub fn name(&self) -> &str {
        match self {
            SmsRouteConfig::AfricasTalking(route) => &route.name,
        }
    }
}

/// One Africa's Talking SMS account (application user name, API key, sender).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtSmsRoute {
    /// The route's name in the queue (`operator` of stored messages) and in `POST /sms/send`.
    pub name: String,
    /// The Africa's Talking application user name (`sandbox` for the sandbox).
    pub username: String,
    /// The API key; env `BARAZA_SMS_API_KEY_<NAME>` (upper case) overrides it: keep it out of
    /// files.
    #[serde(default)]
    pub api_key: Secret,
    /// The sender id or short code messages leave from; empty: the account's default sender
    /// (and replies leave from the short code the citizen wrote to).
    #[serde(default)]
    pub sender: String,
    /// The API's base URL; the sandbox is `https://api.sandbox.africastalking.com`, a local
    /// fake `http://127.0.0.1:PORT`.
    #[serde(default = "default_at_sms_url")]
    pub base_url: String,
    /// Requests per second this route never exceeds (the account's limit).
    #[serde(default = "default_at_rate")]
    pub rate_per_second: u32,
    /// Number prefixes this route carries (like an operator's `prefixes`); empty: any.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// How long one request may take before its outcome is `unknown` (it may have reached
    /// Africa's Talking, so it is never resent), milliseconds.
    #[serde(default = "default_at_timeout_ms")]
    pub timeout_ms: u64,
    /// A 429 pauses the whole route for its `Retry-After`, or for this long when it gives
    /// none, milliseconds.
    #[serde(default = "default_at_throttle_pause_ms")]
    pub throttle_pause_ms: u64,
    /// 429s one message may meet before it goes back to `queued` (sent by the next sweep).
    #[serde(default = "default_at_throttle_retries")]
    pub throttle_retries: u32,
    /// `bulkSMSMode`: on for bulk sender ids; off for premium (subscription) short codes.
    #[serde(default = "default_true")]
    pub bulk_sms_mode: bool,
    /// `enqueue`: ask Africa's Talking to queue the message on its side and answer at once.
    #[serde(default)]
    pub enqueue: bool,
}

impl AtSmsRoute {
    /// The API key: `BARAZA_SMS_API_KEY_<NAME>` when set, else `api_key`.
    pub fn api_key(&self) -> Secret {
        std::env::var(format!(
            "BARAZA_SMS_API_KEY_{}",
            self.name.to_ascii_uppercase().replace(['-', ' '], "_")
        ))
        .map(Secret)
        .unwrap_or_else(|_| self.api_key.clone())
    }
}

fn default_at_sms_url() -> String {
    "https://api.africastalking.com".into()
}
fn default_at_rate() -> u32 {
    10
}
fn default_at_timeout_ms() -> u64 {
    10_000
}
fn default_at_throttle_pause_ms() -> u64 {
    1_000
}
fn default_at_throttle_retries() -> u32 {
    5
}
fn default_true() -> bool {
    true
}

/// An SMS keyword and the flow it starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyword {
    /// The word, matched case-insensitively against the message's first word.
    pub keyword: String,
    /// Flow id.
    pub flow: String,
    /// The language the flow starts in (a Swahili keyword starts in Swahili).
    #[serde(default)]
    pub language: Option<String>,
}

/// One operator's SMSC account, as its integration sheet gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// How commands and logs name this operator (`baraza send --operator NAME`).
    pub name: String,
    pub host: String,
    #[serde(default = "default_smpp_port")]
    pub port: u16,
    pub system_id: String,
    /// The bind password; `BARAZA_SMPP_PASSWORD_<NAME>` (upper case) overrides it.
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub system_type: String,
    /// `transceiver` (default), `transmitter` or `receiver`.
    #[serde(default = "default_bind_type")]
    pub bind: crate::smpp::esme::BindType,
    /// Sender shown on the handset (number, short code or alphanumeric name).
    #[serde(default)]
    pub sender: String,
    /// Messages per second the operator allows this account (each part counts), across all
    /// of its binds on this node: its binds share one limiter, so `binds: 2, tps: 20` sends
    /// at most 20 parts a second in all (operators count per account, not per connection).
    #[serde(default)]
    pub tps: Option<u32>,
    /// Outstanding requests allowed on the bind (default 10).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Seconds between keepalives on an idle link (default 30).
    #[serde(default = "default_enquire_link")]
    pub enquire_link_seconds: u64,
    /// Shortest wait before reconnecting, in seconds (some operators demand 30).
    #[serde(default = "default_reconnect_floor")]
    pub reconnect_floor_seconds: u64,
    /// Binds of the `bind` kind to open to this account (operators allow several to share
    /// the load; each has its own window, and they share the account's `tps`).
    #[serde(default = "default_binds")]
    pub binds: usize,
    /// Extra receiver binds, for operators that deliver messages and receipts on a separate
    /// connection (`bind: transmitter` plus `receiver_binds: 1`).
    #[serde(default)]
    pub receiver_binds: usize,
    /// Number prefixes (in the gateway's `+` form, e.g. `+25471`) this operator carries;
    /// gateway-initiated messages (reminders, API sends) are routed by them. An operator
    /// without prefixes takes the numbers no other operator claims.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// How this operator's receipt ids relate to its submit_sm_resp ids.
    #[serde(default)]
    pub receipt_ids: crate::smpp::receipt::MessageIdNormalisation,
    /// How long an inbound message may take to be stored before the bind answers the SMSC
    /// ESME_RX_T_APPN (it delivers it again later) instead of keeping it waiting; keep it
    /// under the SMSC's own response timeout.
    #[serde(default = "default_deliver_ack_timeout_ms")]
    pub deliver_ack_timeout_ms: u64,
    /// data_coding for text in the GSM 03.38 alphabet: `0` (SMSC default, most operators) or
    /// `1` (IA5, which some operators insist on for 7-bit text). Other text goes as UCS-2 (8).
    #[serde(
        default,
        deserialize_with = "crate::smpp::profile::deserialize_gsm_coding"
    )]
    pub gsm_data_coding: crate::encoding::gsm7::GsmCoding,
    /// How long messages are marked as one: `udh8` (default), `udh16`, `sar` (TLVs, the SMSC
    /// adds the UDH) or `payload` (the whole text in message_payload): operators differ.
    #[serde(default)]
    pub concatenation: crate::smpp::profile::Concatenation,
    /// TON/NPI of the sender per kind (`international`, `short_code`, `alphanumeric`,
    /// `other`, each `{ton, npi}`), for operators that refuse the defaults (1/1, 3/0, 5/0,
    /// 0/1) with ESME_RINVSRCTON.
    #[serde(default)]
    pub source_ton_npi: crate::smpp::profile::AddressPlan,
    /// TON/NPI of the recipient per kind, as `source_ton_npi`.
    #[serde(default)]
    pub dest_ton_npi: crate::smpp::profile::AddressPlan,
    /// How long the SMSC may keep trying to deliver a message, in seconds (validity_period as
    /// a relative time): a survey question that cannot reach the handset within this is
    /// dropped rather than arriving days late. Default 86400 (24 h); 0 leaves the SMSC's own
    /// default; at most 99 days.
    #[serde(
        default = "crate::smpp::profile::default_validity",
        deserialize_with = "crate::smpp::profile::deserialize_validity",
        rename = "validity_seconds"
    )]
    pub validity: Option<std::time::Duration>,
    /// submit_sm_resp statuses that mean "not now" for this operator (names such as
    /// `ESME_RSYSERR`, or numbers such as `0x08`): a part refused with one was not taken, so it
    /// is submitted again under `submit_retry`. Default: ESME_RSYSERR, ESME_RMSGQFUL,
    /// ESME_RSUBMITFAIL, ESME_RTHROTTLED, ESME_RX_T_APPN. ESME_RTHROTTLED and ESME_RMSGQFUL
    /// always pause the whole bind and are retried, listed or not.
    #[serde(default)]
    pub temporary_errors: crate::smpp::profile::TemporaryErrors,
    /// How a part refused with a temporary status is submitted again: `attempts` in all
    /// (default 4), waiting `first_delay_ms` (default 1000) doubled each time up to
    /// `ceiling_ms` (default 30000). A part that got no answer is never submitted again.
    #[serde(default)]
    pub submit_retry: crate::smpp::profile::RetryPolicy,
    /// USSD sessions over this bind (deliver_sm / submit_sm carrying `ussd_service_op`), when
    /// the operator offers them; dialled codes map to flows through `ussd.service_codes`.
    #[serde(default)]
    pub ussd: Option<UssdOverSmppProfile>,
}

/// Where an operator's USSD-over-SMPP messages carry the session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UssdSessionIdSource {
    /// `its_session_info` (0x1383): octet 1 the session number, octet 2 bit 0 end of session.
    ItsSessionInfo,
    /// `user_message_reference` (0x0204), a 16-bit reference some vendors use instead.
    UserMessageReference,
}

/// One operator's USSD-over-SMPP dialect: which `ussd_service_op` values mean what and where
/// the session id lives. Defaults follow SMPP 3.4 (1 PSSR indication, 18 USSR confirm,
/// 2 USSR request, 17 PSSR response); vendors with their own codes override them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UssdOverSmppProfile {
    /// Inbound ops that begin a session (the citizen dialled a code).
    pub begin_ops: Vec<u8>,
    /// Inbound ops that carry the citizen's answer to the screen shown.
    pub answer_ops: Vec<u8>,
    /// Inbound ops that end the session (user abort, network release); the bind answers them
    /// with nothing.
    pub abort_ops: Vec<u8>,
    /// Outbound op for a screen that expects an answer (USSR request).
    pub continue_op: u8,
    /// Outbound op for the last screen (PSSR response).
    pub end_op: u8,
    /// Where the session id is read from and echoed to.
    pub session_id: UssdSessionIdSource,
    /// `service_type` of the replies (many USSD gateways expect `USSD`).
    pub service_type: String,
    /// The code to look up when a begin carries no dialled code in the text nor in
    /// destination_addr (e.g. the operator's short code for Baraza).
    pub service_code: Option<String>,
}

impl Default for UssdOverSmppProfile {
    fn default() -> Self {
        UssdOverSmppProfile {
            begin_ops: vec![1],
            answer_ops: vec![18],
            abort_ops: Vec::new(),
            continue_op: 2,
            end_op: 17,
            session_id: UssdSessionIdSource::ItsSessionInfo,
            service_type: "USSD".to_string(),
            service_code: None,
        }
    }
}

fn default_smpp_port() -> u16 {
    2775
}
fn default_bind_type() -> crate::smpp::esme::BindType {
    crate::smpp::esme::BindType::Transceiver
}
fn default_window() -> usize {
    10
}
fn default_enquire_link() -> u64 {
    30
}
fn default_reconnect_floor() -> u64 {
    1
}

impl OperatorConfig {
    /// The ESME bind settings for this operator.
    pub fn bind_config(&self) -> crate::smpp::esme::BindConfig {
        let password = std::env::var(format!(
            "BARAZA_SMPP_PASSWORD_{}",
            self.name.to_ascii_uppercase().replace(['-', ' '], "_")
        ))
        .unwrap_or_else(|_| self.password.expose().to_string());
        let mut bind =
            crate::smpp::esme::BindConfig::new(&self.host, self.port, &self.system_id, &password);
        bind.system_type = self.system_type.clone();
        bind.bind_type = self.bind;
        bind.tps = self.tps;
        bind.gsm_coding = self.gsm_data_coding;
        bind.concatenation = self.concatenation;
        bind.source_addresses = self.source_ton_npi;
        bind.dest_addresses = self.dest_ton_npi;
        bind.validity = self.validity;
        bind.temporary_errors = self.temporary_errors.clone();
        bind.submit_retry = self.submit_retry;
        bind.window = self.window.max(1);
        bind.enquire_link_interval =
            std::time::Duration::from_secs(self.enquire_link_seconds.max(1));
        bind.reconnect_floor = std::time::Duration::from_secs(self.reconnect_floor_seconds);
        bind.deliver_ack_timeout =
            std::time::Duration::from_millis(self.deliver_ack_timeout_ms.max(1));
        bind
    }
}

fn default_deliver_ack_timeout_ms() -> u64 {
    5_000
}

fn default_binds() -> usize {
    1
}

impl SmppConfig {
    /// [`SmppConfig::node`], else the host name, else `baraza`.
    pub fn node_name(&self) -> String {
        if let Some(node) = self.node.as_ref().filter(|n| !n.trim().is_empty()) {
            return node.trim().to_string();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "baraza".to_string())
    }
}

/// Per-subscriber admission: requests beyond this rate are refused before a session loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Sustained requests per minute per phone number.
    pub per_subscriber_per_minute: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Most numbers tracked at once. Numbers back at a full burst are forgotten every 30 s;
    /// when the table is full of numbers still inside their window (a flood of distinct
    /// numbers), a new number is admitted untracked and counted
    /// (`baraza_admission_untracked_total`).
    pub max_tracked: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            per_subscriber_per_minute: 60,
            burst: 20,
            max_tracked: 1_000_000,
        }
    }
}

/// The admin endpoints (flow reload, `/sms/*`, call attempts, health details).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for the admin routes; `BARAZA_ADMIN_TOKEN` overrides it. Required when
    /// the gateway listens on a non-loopback address (it refuses to start without one).
    /// Without one, admin routes answer only loopback requests that carry no forwarding
    /// header (a reverse proxy on the same host is loopback too).
    pub token: Option<Secret>,
}

/// Who may post callbacks to the gateway. Twilio signs every request (`X-Twilio-Signature`);
/// Africa's Talking and Hubtel sign nothing, so a shared token in the callback URL
/// (`?token=...`) and an allow-list of the provider's addresses stand in for a signature.
/// Whatever is set for a provider must all hold; a provider with nothing set is open (the
/// gateway logs a warning at start for each such route it serves).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksConfig {
    /// Refuse to start while a served provider's callbacks are unauthenticated (on in
    /// `gateway-config/production.yaml`).
    pub required: bool,
    /// Reverse proxies in front of the gateway (CIDRs): for a request from one of them the
    /// client address is taken from `X-Forwarded-For` (the right-most address that is not a
    /// trusted proxy); from any other peer that header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Africa's Talking USSD, voice and end-of-session callbacks.
    pub africastalking: CallbackAuth,
    /// Hubtel USSD callbacks.
    pub hubtel: CallbackAuth,
    /// TwiML voice and status callbacks (Twilio, SignalWire, Somleng).
    pub twilio: CallbackAuth,
}

/// How one provider's callbacks prove where they come from.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackAuth {
    /// A shared secret the provider's callback URL carries as `?token=...`;
    /// `BARAZA_CALLBACK_TOKEN_<PROVIDER>` overrides it (e.g. `..._AFRICASTALKING`).
    pub token: Option<Secret>,
    /// Addresses the provider calls from (CIDRs such as `196.201.214.0/24`, or single
    /// addresses); empty: any address.
    pub allow_from: Vec<String>,
    /// Twilio only: the auth token that signs callbacks. `BARAZA_TWILIO_AUTH_TOKEN`, then
    /// `voice.outbound`'s Twilio auth token, when this is not set. With one, every TwiML
    /// callback must carry a valid `X-Twilio-Signature`.
    pub auth_token: Option<Secret>,
}

impl CallbackAuth {
    /// `token=...` for the callback URLs the gateway hands to this provider (voice action
    /// URLs, outbound calls' `Url`), when a token is set, so later callbacks pass the check.
    pub fn url_query(&self) -> Option<String> {
        self.token
            .as_ref()
            .filter(|t| !t.expose().trim().is_empty())
            .map(|t| format!("token={}", crate::channels::form::encode(t.expose())))
    }
}

/// The contact list (`contacts:`): what the `contacts` module needs to read numbers and
/// fields. Checked when the module builds its schema from it (bad region codes, choice fields
/// without choices and clashing names are errors there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactsConfig {
    /// Country (ISO 3166 alpha-2) of numbers written without a country code (`0712 345 678`).
    pub default_region: String,
    /// Countries whose numbers are accepted (ISO 3166 alpha-2); others are refused.
    pub accepted_countries: Vec<String>,
    /// Location fields, most general first (their names are the columns an import reads).
    pub location_fields: Vec<String>,
    /// Further fields with a type, by name (`household_size: {type: number}`).
    pub custom_fields: BTreeMap<String, CustomFieldConfig>,
    /// More header names an import accepts, each to a field name (`kaunti: county`), beside
    /// the built-in aliases (`phone`, `msisdn`, `simu`...).
    pub column_aliases: BTreeMap<String, String>,
    /// Operator names by the E.164 prefixes allocated to them (`safaricom: ["+25470", ...]`);
    /// the longest matching prefix names a contact's operator. Setting it replaces the
    /// embedded Kenyan table. A ported number keeps the operator of its prefix.
    pub operators: BTreeMap<String, Vec<String>>,
    /// The segments file; relative to the config file's folder. Default:
    /// `<flows_dir>/campaigns/segments.yaml` (a subfolder, so the flow loader never reads it).
    pub segments_file: Option<PathBuf>,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        let prefixes = |list: &[&str]| list.iter().map(|p| format!("+254{p}")).collect();
        ContactsConfig {
            default_region: "KE".into(),
            accepted_countries: vec!["KE".into()],
            location_fields: vec!["county".into(), "sub_county".into(), "ward".into()],
            custom_fields: BTreeMap::new(),
            column_aliases: [("kaunti", "county"), ("wadi", "ward")]
                .into_iter()
                .map(|(a, f)| (a.to_string(), f.to_string()))
                .collect(),
            // Kenya's mobile prefixes as allocated (after the leading 0 of the national form).
            operators: [
                (
                    "safaricom",
                    prefixes(&[
                        "70", "71", "72", "740", "741", "742", "743", "745", "746", "748", "757",
                        "758", "759", "768", "769", "79", "110", "111", "112", "113", "114", "115",
                    ]),
                ),
                (
                    "airtel",
                    prefixes(&[
                        "73", "750", "751", "752", "753", "754", "755", "756", "762", "78", "100",
                        "101", "102",
                    ]),
                ),
                ("telkom", prefixes(&["77"])),
            ]
            .into_iter()
            .map(|(name, list)| (name.to_string(), list))
            .collect(),
            segments_file: None,
        }
    }
}

/// A custom contact field: its type, and for a choice the values allowed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFieldConfig {
    #[serde(rename = "type")]
    pub kind: FieldKind,
    /// The allowed values of a `choice` field (matched without case on import).
    #[serde(default)]
    pub choices: Vec<String>,
}

/// What a custom field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Any text.
    Text,
    /// A number (stored in its shortest decimal form).
    Number,
    /// A calendar date, stored as `YYYY-MM-DD`.
    Date,
    /// One of the declared `choices`.
    Choice,
}

/// A password, token or key from config or the environment: readable through
/// [`Secret::expose`] only, and never printed (`Debug` shows `<redacted>`), so a config or
/// error logged whole leaks nothing.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

/// Why a config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// The embedded defaults: in-memory sessions, SQLite under `./data`, flows from `flows/`.
    pub fn embedded() -> Config {
        Config {
            listen: default_listen(),
            flows_dir: default_flows_dir(),
            flows_poll_ms: default_flows_poll_ms(),
            sessions: SessionsConfig::Memory,
            results: ResultsConfig::default(),
            store_tls: StoreTlsConfig::default(),
            ussd: UssdConfig::default(),
            voice: VoiceConfig::default(),
            smpp: SmppConfig::default(),
            admission: AdmissionConfig::default(),
            admin: AdminConfig::default(),
            callbacks: CallbacksConfig::default(),
            pseudonym_secret: None,
            contacts: ContactsConfig::default(),
        }
    }

    /// Reads a config file; relative paths inside it are taken from the file's folder.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config =
            serde_saphyr::from_str(&source).map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.flows_dir = resolve(base, &config.flows_dir);
        if let ResultsConfig::Sqlite { path } = &mut config.results {
            *path = resolve(base, path);
        }
        config.voice.audio_dir = resolve(base, &config.voice.audio_dir);
        config.store_tls.redis.resolve(base);
        config.store_tls.postgres.resolve(base);
        if let Some(segments) = &mut config.contacts.segments_file {
            *segments = resolve(base, segments);
        }
        Ok(config)
    }

    /// Applies environment overrides (secrets and URLs are better kept out of files).
    pub fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("BARAZA_REDIS_URL") {
            match &mut self.sessions {
                SessionsConfig::Redis { url: u, .. } => *u = Some(Secret(url)),
                SessionsConfig::Memory => {
                    self.sessions = SessionsConfig::Redis {
                        url: Some(Secret(url)),
                        key_prefix: default_prefix(),
                        response_timeout_ms: default_redis_timeout(),
                        node_cache_entries: default_node_cache_entries(),
                    }
                }
            }
        }
        if let Ok(url) = std::env::var("BARAZA_POSTGRES_URL")
            && let ResultsConfig::Postgres { url: u, .. } = &mut self.results
        {
            *u = Some(Secret(url));
        }
        if let Ok(secret) = std::env::var("BARAZA_PSEUDONYM_SECRET") {
            self.pseudonym_secret = Some(Secret(secret));
        }
        if let Ok(token) = std::env::var("BARAZA_ADMIN_TOKEN") {
            self.admin.token = Some(Secret(token));
        }
        for (name, auth) in [
            ("AFRICASTALKING", &mut self.callbacks.africastalking),
            ("HUBTEL", &mut self.callbacks.hubtel),
            ("TWILIO", &mut self.callbacks.twilio),
        ] {
            if let Ok(token) = std::env::var(format!("BARAZA_CALLBACK_TOKEN_{name}")) {
                auth.token = Some(Secret(token));
            }
        }
        if let Ok(token) = std::env::var("BARAZA_TWILIO_AUTH_TOKEN") {
            self.callbacks.twilio.auth_token = Some(Secret(token));
        }
    }

    /// Fills an unset `voice.public_url` from the address the gateway listens on (`--listen`,
    /// port 0 resolved), so voice callbacks and audio come back to this process; an
    /// unspecified address (`0.0.0.0`) becomes loopback, with a warning: providers elsewhere
    /// need `public_url` set to reach it.
    pub fn settle_public_url(&mut self, listening: SocketAddr) {
        if !self.voice.public_url.trim().is_empty() {
            return;
        }
        let mut addr = listening;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
            tracing::warn!(
                %listening,
                "voice.public_url is not set: voice callbacks and audio point at {addr}, which \
                 providers on other hosts cannot reach"
            );
        }
        self.voice.public_url = format!("http://{addr}");
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Shortest pseudonym secret accepted, in bytes.
pub const MIN_PSEUDONYM_SECRET: usize = 16;

/// Writes a new file readable by its owner only (0600 from the moment it exists, never
/// world-readable for an instant); an existing file is an error, never overwritten.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A URL as it may be logged: the password in its user info replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            let masked = if user_info.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

impl Config {
    /// The key phone numbers are pseudonymised with (logs and exports share it, so a number
    /// has the same pseudonym in both). From `pseudonym_secret` / `BARAZA_PSEUDONYM_SECRET`;
    /// without one, a random key is made once and kept beside the embedded result store
    /// (`pseudonym.key`), so the embedded defaults never fall back to a guessable key.
    pub fn pseudonym_key(&self) -> Result<Vec<u8>, ConfigError> {
        if let Some(secret) = &self.pseudonym_secret {
            // A short secret makes every pseudonym guessable: numbers are few enough to try.
            if secret.expose().len() < MIN_PSEUDONYM_SECRET {
                return Err(ConfigError::Invalid {
                    path: PathBuf::from("pseudonym_secret"),
                    message: format!(
                        "the pseudonym secret (pseudonym_secret or BARAZA_PSEUDONYM_SECRET) must \
                         be at least {MIN_PSEUDONYM_SECRET} bytes; make one with \
                         `head -c 32 /dev/urandom | base64`"
                    ),
                });
            }
            return Ok(secret.expose().as_bytes().to_vec());
        }
        let folder = match &self.results {
            ResultsConfig::Sqlite { path } => path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            ResultsConfig::Postgres { .. } => PathBuf::from("data"),
        };
        let key_path = folder.join("pseudonym.key");
        let io = |source| ConfigError::Io {
            path: key_path.clone(),
            source,
        };
        match std::fs::read(&key_path) {
            Ok(key) if key.len() >= MIN_PSEUDONYM_SECRET => {
                // A key file an earlier version wrote world-readable is made private.
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(&key_path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                return Ok(key);
            }
            Ok(_) => {
                return Err(ConfigError::Invalid {
                    path: key_path.clone(),
                    message: "pseudonym key file is shorter than 16 bytes".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(&folder).map_err(io)?;
        let mut key = vec![0u8; 32];
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .map_err(io)?;
        }
        write_private(&key_path, &key).map_err(io)?;
        Ok(key)
    }
}
