//! Behaviour of the session store: one suite run against both backends (in-memory and the real
//! Redis at `BARAZA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), plus what only one
//! backend can show: expiry under a paused clock (memory), and the key layout, one round trip
//! per load/save and timeouts on a stalled server (Redis).
//!
//! Every Redis test uses its own key prefix and deletes its keys afterwards (even when it
//! fails). Stalls and round-trip counts use a small TCP proxy in front of Redis rather than
//! `CLIENT PAUSE`/`INFO commandstats`, which would pause or mix with every other user of the
//! shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baraza::session_store::{
    InMemorySessions, RedisSessions, SaveOutcome, SessionKey, SessionStore, SessionStoreError,
    Stored,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, watch};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("BARAZA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A key prefix no other test (in this or another process) uses.
fn unique_prefix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "baraza-test-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Generous: these tests assert behaviour, never speed, on a shared and busy machine.
const TEST_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis-backed store under a private prefix; its keys are deleted on drop.
struct RedisFixture {
    prefix: String,
    store: Arc<SessionStore>,
}

impl RedisFixture {
    async fn new() -> RedisFixture {
        RedisFixture::via(&redis_url(), TEST_RESPONSE_TIMEOUT).await
    }

    /// A store that talks to Redis through `url` (e.g. a proxy).
    async fn via(url: &str, response_timeout: Duration) -> RedisFixture {
        let prefix = unique_prefix();
        let sessions = RedisSessions::connect(url, &prefix, response_timeout)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test Redis at {url}: {e}"));
        RedisFixture {
            prefix,
            store: Arc::new(SessionStore::Redis(sessions)),
        }
    }

    /// Every key under this fixture's prefix, sorted.
    async fn keys(&self) -> Vec<String> {
        let mut raw = raw_connection().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut raw)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }
}

impl Drop for RedisFixture {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and this also runs when a test panicked.
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<Vec<u8>>)>(&mut connection)
            else {
                return;
            };
            if !keys.is_empty() {
                let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut connection);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// A plain connection for looking at what the store wrote.
async fn raw_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("test Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection to the test Redis")
}

fn memory_store() -> Arc<SessionStore> {
    Arc::new(SessionStore::InMemory(InMemorySessions::new()))
}

/// A TCP proxy in front of the test Redis that records the commands passing through and can
/// stop answering (holding Redis's replies) to simulate a stalled server.
struct Proxy {
    addr: SocketAddr,
    /// Names (upper case, e.g. `SCRIPT LOAD` as `SCRIPT`) of the complete commands clients sent.
    commands: Arc<Mutex<Vec<String>>>,
    /// `true` while replies are held back.
    stalled: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let info = redis::Client::open(redis_url())
            .expect("test Redis URL")
            .get_connection_info()
            .clone();
        let upstream = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => panic!("the proxy tests need a plain TCP Redis URL, got {other:?}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (stalled, stall_rx) = watch::channel(false);
        let counter = Arc::clone(&commands);
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(pump(client, server, Arc::clone(&counter), stall_rx.clone()));
            }
        });
        Proxy {
            addr,
            commands,
            stalled,
            accept_task,
        }
    }

    /// The test Redis URL (database and credentials kept) pointing at the proxy.
    fn url(&self) -> String {
        let info = redis::Client::open(redis_url())
            .expect("test Redis URL")
            .get_connection_info()
            .clone();
        let settings = info.redis_settings();
        let credentials = match (settings.username(), settings.password()) {
            (Some(user), Some(password)) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            _ => String::new(),
        };
        format!("redis://{credentials}{}/{}", self.addr, settings.db())
    }

    /// Removes and returns the commands recorded so far.
    fn take_commands(&self) -> Vec<String> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stall(false);
        self.accept_task.abort();
    }
}

/// Copies bytes both ways between one client and Redis, counting client commands and holding
/// Redis's bytes while stalled.
async fn pump(
    client: TcpStream,
    server: TcpStream,
    commands: Arc<Mutex<Vec<String>>>,
    mut stalled: watch::Receiver<bool>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = resp_frame_end(&pending, 0) {
                let name = command_name(&pending[..end]);
                commands
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name);
                pending.drain(..end);
            }
            if server_write.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            if client_write.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(upstream, downstream);
}

/// The first word of a command frame (`*N` array of bulk strings, or an inline command).
fn command_name(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame);
    let word = if text.starts_with('*') {
        text.split("\r\n").nth(2).unwrap_or("")
    } else {
        text.split_whitespace().next().unwrap_or("")
    };
    word.to_ascii_uppercase()
}

/// Where the RESP frame starting at `at` ends, if it is complete.
fn resp_frame_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let number = || -> Option<i64> {
        std::str::from_utf8(buf.get(at + 1..line_end)?)
            .ok()?
            .parse()
            .ok()
    };
    match buf.get(at)? {
        b'*' => {
            let mut pos = line_end + 2;
            for _ in 0..number()?.max(0) {
                pos = resp_frame_end(buf, pos)?;
            }
            Some(pos)
        }
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Some(line_end + 2);
            }
            let end = line_end + 2 + usize::try_from(len).ok()? + 2;
            (buf.len() >= end).then_some(end)
        }
        // Simple strings, errors, integers, and inline commands: one line.
        _ => Some(line_end + 2),
    }
}

// ---------------------------------------------------------------------------------------------
// The shared suite
// ---------------------------------------------------------------------------------------------

/// Runs each listed case against a fresh in-memory store and a fresh Redis store.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::memory_store()).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = super::RedisFixture::new().await;
                    super::$case(std::sync::Arc::clone(&fixture.store)).await;
                }
            )*
        }
    };
}

on_both_backends!(
    loading_a_missing_session_gives_none,
    saves_count_versions_from_one_and_load_returns_them,
    a_stale_or_wrong_expectation_conflicts_and_changes_nothing,
    concurrent_saves_of_one_version_have_exactly_one_winner,
    concurrent_creations_have_exactly_one_winner,
    save_sets_and_refreshes_the_time_to_live,
    delete_removes_a_session,
    resumable_copies_put_get_take_and_clear,
    opt_outs_are_recorded_and_withdrawn,
    a_lease_has_one_holder_until_it_gives_it_back,
    a_claim_is_refused_while_its_mark_lives,
    odd_ids_stay_distinct,
    ping_answers,
    save_and_remember_writes_the_session_and_the_resume_copy,
    load_with_resumable_reads_the_session_and_the_copy,
);

const MINUTE: Duration = Duration::from_secs(60);

async fn loading_a_missing_session_gives_none(store: Arc<SessionStore>) {
    let key = SessionKey::new("africastalking", "never-saved");
    assert_eq!(store.load(&key).await.expect("load"), None);
    assert_eq!(store.ttl_millis(&key).await.expect("ttl"), None);
}

async fn saves_count_versions_from_one_and_load_returns_them(store: Arc<SessionStore>) {
    let key = SessionKey::new("africastalking", "ATUid_1");
    let first = b"\x00binary\xffstate\x00".to_vec();
    assert_eq!(
        store.save(&key, None, &first, MINUTE).await.expect("save"),
        SaveOutcome::Saved { version: 1 }
    );
    assert_eq!(
        store.load(&key).await.expect("load"),
        Some(Stored {
            version: 1,
            data: first
        })
    );
    assert_eq!(
        store
            .save(&key, Some(1), b"second", MINUTE)
            .await
            .expect("save"),
        SaveOutcome::Saved { version: 2 }
    );
    assert_eq!(
        store
            .save(&key, Some(2), b"", MINUTE)
            .await
            .expect("save empty"),
        SaveOutcome::Saved { version: 3 }
    );
    assert_eq!(
        store.load(&key).await.expect("load"),
        Some(Stored {
            version: 3,
            data: Vec::new()
        })
    );
}

async fn a_stale_or_wrong_expectation_conflicts_and_changes_nothing(store: Arc<SessionStore>) {
    let key = SessionKey::new("hubtel", "s-1");
    store.save(&key, None, b"v1", MINUTE).await.expect("save");
    store
        .save(&key, Some(1), b"v2", MINUTE)
        .await
        .expect("save");
    for expected in [Some(1), None, Some(3), Some(u64::MAX - 1)] {
        assert_eq!(
            store
                .save(&key, expected, b"intruder", MINUTE)
                .await
                .expect("save"),
            SaveOutcome::Conflict { current: Some(2) },
            "expected {expected:?}"
        );
    }
    assert_eq!(
        store.load(&key).await.expect("load"),
        Some(Stored {
            version: 2,
            data: b"v2".to_vec()
        })
    );
    let missing = SessionKey::new("hubtel", "s-missing");
    assert_eq!(
        store
            .save(&missing, Some(1), b"x", MINUTE)
            .await
            .expect("save"),
        SaveOutcome::Conflict { current: None }
    );
    assert_eq!(store.load(&missing).await.expect("load"), None);
}

const RACERS: usize = 16;

/// Runs `RACERS` saves of the same key with the same expectation, released together; returns
/// the winners' data and the losers' outcomes.
async fn race(
    store: &Arc<SessionStore>,
    key: &SessionKey,
    expected: Option<u64>,
) -> (Vec<Vec<u8>>, Vec<SaveOutcome>) {
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for racer in 0..RACERS {
        let store = Arc::clone(store);
        let key = key.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let data = format!("racer {racer}").into_bytes();
            barrier.wait().await;
            let outcome = store
                .save(&key, expected, &data, MINUTE)
                .await
                .expect("save");
            (data, outcome)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        let (data, outcome) = task.await.expect("racer task");
        match outcome {
            SaveOutcome::Saved { .. } => winners.push(data),
            conflict => losers.push(conflict),
        }
    }
    (winners, losers)
}

async fn concurrent_saves_of_one_version_have_exactly_one_winner(store: Arc<SessionStore>) {
    let key = SessionKey::new("africastalking", "contended");
    store
        .save(&key, None, b"start", MINUTE)
        .await
        .expect("save");
    let (winners, losers) = race(&store, &key, Some(1)).await;
    assert_eq!(winners.len(), 1, "exactly one save of version 1 must win");
    assert!(
        losers
            .iter()
            .all(|o| *o == SaveOutcome::Conflict { current: Some(2) })
    );
    let stored = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(stored.version, 2);
    assert_eq!(stored.data, winners[0]);
}

async fn concurrent_creations_have_exactly_one_winner(store: Arc<SessionStore>) {
    let key = SessionKey::new("africastalking", "created-twice");
    let (winners, losers) = race(&store, &key, None).await;
    assert_eq!(winners.len(), 1, "exactly one creation must win");
    assert!(
        losers
            .iter()
            .all(|o| *o == SaveOutcome::Conflict { current: Some(1) })
    );
    assert_eq!(
        store.load(&key).await.expect("load").map(|s| s.data),
        Some(winners[0].clone())
    );
}

async fn save_sets_and_refreshes_the_time_to_live(store: Arc<SessionStore>) {
    let key = SessionKey::new("africastalking", "ttl");
    store
        .save(&key, None, b"a", Duration::from_secs(10))
        .await
        .expect("save");
    let first = store.ttl_millis(&key).await.expect("ttl").expect("exists");
    assert!(
        first > 0 && first <= 10_000,
        "ttl {first} ms after a 10 s save"
    );
    store
        .save(&key, Some(1), b"b", Duration::from_secs(100))
        .await
        .expect("save");
    let refreshed = store.ttl_millis(&key).await.expect("ttl").expect("exists");
    assert!(
        refreshed > 10_000 && refreshed <= 100_000,
        "ttl {refreshed} ms after a 100 s save"
    );
    // A shorter time to live replaces a longer one too: it is set, not extended.
    store
        .save(&key, Some(2), b"c", Duration::from_secs(5))
        .await
        .expect("save");
    let shortened = store.ttl_millis(&key).await.expect("ttl").expect("exists");
    assert!(
        shortened > 0 && shortened <= 5_000,
        "ttl {shortened} ms after a 5 s save"
    );
    // A failed save leaves the time to live alone.
    store
        .save(&key, Some(1), b"stale", Duration::from_secs(100))
        .await
        .expect("save");
    let after_conflict = store.ttl_millis(&key).await.expect("ttl").expect("exists");
    assert!(
        after_conflict <= 5_000,
        "ttl {after_conflict} ms after a conflicting save"
    );
}

async fn delete_removes_a_session(store: Arc<SessionStore>) {
    let key = SessionKey::new("africastalking", "deleted");
    let other = SessionKey::new("africastalking", "kept");
    store.save(&key, None, b"a", MINUTE).await.expect("save");
    store.save(&other, None, b"b", MINUTE).await.expect("save");
    assert!(store.delete(&key).await.expect("delete"));
    assert_eq!(store.load(&key).await.expect("load"), None);
    assert!(!store.delete(&key).await.expect("delete again"));
    assert!(store.load(&other).await.expect("load").is_some());
    // Deleted means "must not exist" succeeds again, from version 1.
    assert_eq!(
        store
            .save(&key, None, b"again", MINUTE)
            .await
            .expect("save"),
        SaveOutcome::Saved { version: 1 }
    );
}

async fn resumable_copies_put_get_take_and_clear(store: Arc<SessionStore>) {
    let (subscriber, flow) = ("+254700000001", "feedback");
    assert_eq!(
        store.get_resumable(subscriber, flow).await.expect("get"),
        None
    );
    store
        .put_resumable(subscriber, flow, b"state-1", MINUTE)
        .await
        .expect("put");
    store
        .put_resumable(subscriber, flow, b"state-2", MINUTE)
        .await
        .expect("put");
    store
        .put_resumable(subscriber, "other-flow", b"other", MINUTE)
        .await
        .expect("put");
    store
        .put_resumable("+254700000002", flow, b"neighbour", MINUTE)
        .await
        .expect("put");
    // Get does not consume; a later put replaces.
    assert_eq!(
        store.get_resumable(subscriber, flow).await.expect("get"),
        Some(b"state-2".to_vec())
    );
    assert_eq!(
        store.get_resumable(subscriber, flow).await.expect("get"),
        Some(b"state-2".to_vec())
    );
    // Take consumes.
    assert_eq!(
        store.take_resumable(subscriber, flow).await.expect("take"),
        Some(b"state-2".to_vec())
    );
    assert_eq!(
        store.take_resumable(subscriber, flow).await.expect("take"),
        None
    );
    assert_eq!(
        store.get_resumable(subscriber, flow).await.expect("get"),
        None
    );
    // Clear removes; clearing nothing is fine.
    store
        .put_resumable(subscriber, flow, b"state-3", MINUTE)
        .await
        .expect("put");
    store
        .clear_resumable(subscriber, flow)
        .await
        .expect("clear");
    store
        .clear_resumable(subscriber, flow)
        .await
        .expect("clear nothing");
    assert_eq!(
        store.get_resumable(subscriber, flow).await.expect("get"),
        None
    );
    // Other flows and subscribers were never touched.
    assert_eq!(
        store
            .get_resumable(subscriber, "other-flow")
            .await
            .expect("get"),
        Some(b"other".to_vec())
    );
    assert_eq!(
        store
            .get_resumable("+254700000002", flow)
            .await
            .expect("get"),
        Some(b"neighbour".to_vec())
    );
}

async fn opt_outs_are_recorded_and_withdrawn(store: Arc<SessionStore>) {
    let subscriber = "+254700000003";
    assert!(!store.is_opted_out(subscriber).await.expect("is_opted_out"));
    store
        .set_opted_out(subscriber, true)
        .await
        .expect("opt out");
    store
        .set_opted_out(subscriber, true)
        .await
        .expect("opt out twice");
    assert!(store.is_opted_out(subscriber).await.expect("is_opted_out"));
    assert!(
        !store
            .is_opted_out("+254700000004")
            .await
            .expect("is_opted_out")
    );
    store
        .set_opted_out(subscriber, false)
        .await
        .expect("opt back in");
    assert!(!store.is_opted_out(subscriber).await.expect("is_opted_out"));
    store
        .set_opted_out(subscriber, false)
        .await
        .expect("opt back in twice");
}

/// A claim (a missed call's de-duplication) is the first caller's only: a second claim of
/// the same mark is refused while it lives, although claims carry no holder (a lease's rule,
/// "the holder's own mark counts as taken", must not apply to them).
async fn a_claim_is_refused_while_its_mark_lives(store: Arc<SessionStore>) {
    assert!(
        store
            .claim("missed", "+254700000007", MINUTE)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim("missed", "+254700000007", MINUTE)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim("missed", "+254700000008", MINUTE)
            .await
            .expect("claim")
    );
}

/// A lease (one SMS step per number across nodes) has one holder at a time; only its holder
/// gives it back, and an expired one can be taken by another.
async fn a_lease_has_one_holder_until_it_gives_it_back(store: Arc<SessionStore>) {
    let number = "+254700000005";
    assert!(
        store
            .lease("turn", number, "a-1", MINUTE)
            .await
            .expect("lease")
    );
    assert!(
        !store
            .lease("turn", number, "b-1", MINUTE)
            .await
            .expect("lease")
    );
    assert!(
        store
            .lease("turn", "+254700000006", "b-1", MINUTE)
            .await
            .expect("lease"),
        "another number is free"
    );
    store.release("turn", number, "b-1").await.expect("release");
    assert!(
        !store
            .lease("turn", number, "b-2", MINUTE)
            .await
            .expect("lease"),
        "only the holder gives it back"
    );
    store.release("turn", number, "a-1").await.expect("release");
    assert!(
        store
            .lease("turn", number, "b-3", Duration::from_millis(30))
            .await
            .expect("lease")
    );
    // Expiry is the store's own clock (Redis PX, the in-memory deadline): wait it out.
    let taken = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if store
                .lease("turn", number, "c-1", MINUTE)
                .await
                .expect("lease")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(taken.is_ok(), "an expired lease is free again");
    store.release("turn", number, "b-3").await.expect("release");
    assert!(
        !store
            .lease("turn", number, "d-1", MINUTE)
            .await
            .expect("lease"),
        "the late release of an expired lease leaves the new holder's alone"
    );
}

/// Ids that could collide or break a naive `prefix:s:{channel:id}` layout.
fn odd_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "a", "b", "a}b", "a}", "}", "{", "{a}", "a:b", "a%3Ab", "a%253Ab", "a b", "a\tb", "a\r\nb",
        "", ":", "~", "ñ", "%", "*", "a*", "?", "[ab]", "\u{0}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let long = "x".repeat(1000);
    let mut long_other = "x".repeat(999);
    long_other.push('y');
    ids.push(long);
    ids.push(long_other);
    ids.push("}".repeat(1000));
    ids.push("x".repeat(128));
    ids.push("x".repeat(129));
    ids
}

async fn odd_ids_stay_distinct(store: Arc<SessionStore>) {
    let ids = odd_ids();
    // Sessions, including pairs whose channel/id boundary differs.
    let mut keys: Vec<(SessionKey, Vec<u8>)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        keys.push((
            SessionKey::new("ch", id),
            format!("session {i}").into_bytes(),
        ));
        keys.push((
            SessionKey::new(id, "ch"),
            format!("reversed {i}").into_bytes(),
        ));
    }
    keys.push((SessionKey::new("a:b", "c"), b"split one".to_vec()));
    keys.push((SessionKey::new("a", "b:c"), b"split two".to_vec()));
    for (key, data) in &keys {
        assert_eq!(
            store.save(key, None, data, MINUTE).await.expect("save"),
            SaveOutcome::Saved { version: 1 },
            "{key:?} collided with an earlier key"
        );
    }
    for (key, data) in &keys {
        let stored = store.load(key).await.expect("load").expect("stored");
        assert_eq!(&stored.data, data, "{key:?}");
    }
    // Resumable copies and opt-outs, keyed by subscriber (and flow).
    for (i, id) in ids.iter().enumerate() {
        store
            .put_resumable(id, "flow", format!("by subscriber {i}").as_bytes(), MINUTE)
            .await
            .expect("put");
        store
            .put_resumable("+254", id, format!("by flow {i}").as_bytes(), MINUTE)
            .await
            .expect("put");
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            store.get_resumable(id, "flow").await.expect("get"),
            Some(format!("by subscriber {i}").into_bytes()),
            "subscriber {id:?}"
        );
        assert_eq!(
            store.get_resumable("+254", id).await.expect("get"),
            Some(format!("by flow {i}").into_bytes()),
            "flow {id:?}"
        );
    }
    for id in ids.iter().step_by(2) {
        store.set_opted_out(id, true).await.expect("opt out");
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            store.is_opted_out(id).await.expect("is_opted_out"),
            i % 2 == 0,
            "subscriber {id:?}"
        );
    }
}

async fn ping_answers(store: Arc<SessionStore>) {
    store.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------------------------
// In-memory only: expiry under a paused clock
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_sessions_expire_unless_a_save_refreshes_them() {
    let store = SessionStore::InMemory(InMemorySessions::new());
    let key = SessionKey::new("africastalking", "expiring");
    let ttl = Duration::from_secs(10);
    store.save(&key, None, b"a", ttl).await.expect("save");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        store.load(&key).await.expect("load").map(|s| s.version),
        Some(1)
    );
    store
        .save(&key, Some(1), b"b", ttl)
        .await
        .expect("refreshing save");
    // 12 s after the first save: alive only because the second save refreshed the deadline.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        store.load(&key).await.expect("load").map(|s| s.version),
        Some(2)
    );
    assert_eq!(store.ttl_millis(&key).await.expect("ttl"), Some(4_000));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "expired at its deadline"
    );
    assert_eq!(store.ttl_millis(&key).await.expect("ttl"), None);
    // An expired session is absent for saves too.
    assert_eq!(
        store.save(&key, Some(2), b"late", ttl).await.expect("save"),
        SaveOutcome::Conflict { current: None }
    );
    assert_eq!(
        store.save(&key, None, b"new", ttl).await.expect("save"),
        SaveOutcome::Saved { version: 1 }
    );
}

#[tokio::test(start_paused = true)]
async fn memory_resumable_copies_expire() {
    let store = SessionStore::InMemory(InMemorySessions::new());
    store
        .put_resumable("+254", "flow", b"state", Duration::from_secs(5))
        .await
        .expect("put");
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(
        store
            .get_resumable("+254", "flow")
            .await
            .expect("get")
            .is_some()
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        store.get_resumable("+254", "flow").await.expect("get"),
        None
    );
    store
        .put_resumable("+254", "flow", b"state", Duration::from_secs(5))
        .await
        .expect("put");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        store.take_resumable("+254", "flow").await.expect("take"),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn memory_purge_removes_only_expired_entries() {
    let sessions = InMemorySessions::new();
    let store = SessionStore::InMemory(sessions);
    for i in 0..5 {
        let key = SessionKey::new("africastalking", &format!("short-{i}"));
        store
            .save(&key, None, b"x", Duration::from_secs(1))
            .await
            .expect("save");
        store
            .put_resumable(&format!("+{i}"), "flow", b"x", Duration::from_secs(1))
            .await
            .expect("put");
    }
    let kept = SessionKey::new("africastalking", "long");
    store
        .save(&kept, None, b"x", Duration::from_secs(60))
        .await
        .expect("save");
    tokio::time::advance(Duration::from_secs(2)).await;
    let SessionStore::InMemory(sessions) = &store else {
        unreachable!("built as in-memory above");
    };
    assert_eq!(
        sessions.len(),
        11,
        "expired entries are still held before a purge"
    );
    assert_eq!(sessions.purge_expired(), 10);
    assert_eq!(sessions.len(), 1);
    assert!(store.load(&kept).await.expect("load").is_some());
}

#[tokio::test(start_paused = true)]
async fn memory_writes_sweep_abandoned_sessions() {
    let store = SessionStore::InMemory(InMemorySessions::new());
    for i in 0..100 {
        let key = SessionKey::new("africastalking", &format!("abandoned-{i}"));
        store
            .save(&key, None, b"x", Duration::from_secs(1))
            .await
            .expect("save");
    }
    // Never loaded again; a later write after the sweep interval clears them out.
    tokio::time::advance(Duration::from_secs(31)).await;
    let fresh = SessionKey::new("africastalking", "fresh");
    store.save(&fresh, None, b"x", MINUTE).await.expect("save");
    let SessionStore::InMemory(sessions) = &store else {
        unreachable!("built as in-memory above");
    };
    assert_eq!(sessions.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_key_layout_uses_hash_tags_and_escapes_ids() {
    use sha2::{Digest, Sha256};

    let fixture = RedisFixture::new().await;
    let store = &fixture.store;
    let p = fixture.prefix.clone();
    store
        .save(
            &SessionKey::new("africastalking", "ATUid_1"),
            None,
            b"data",
            MINUTE,
        )
        .await
        .expect("save");
    store
        .save(
            &SessionKey::new("africastalking", "a}b:c d"),
            None,
            b"odd",
            MINUTE,
        )
        .await
        .expect("save");
    let long = "x".repeat(1000);
    store
        .save(&SessionKey::new("hubtel", &long), None, b"long", MINUTE)
        .await
        .expect("save");
    store
        .put_resumable("+254700000001", "feedback", b"r", MINUTE)
        .await
        .expect("put");
    store
        .set_opted_out("+254700000001", true)
        .await
        .expect("opt out");

    let long_digest = hex::encode(Sha256::digest(long.as_bytes()));
    let mut expected = vec![
        format!("{p}:s:{{africastalking:ATUid_1}}"),
        format!("{p}:s:{{africastalking:a%7Db%3Ac%20d}}"),
        format!("{p}:s:{{hubtel:~{long_digest}}}"),
        format!("{p}:r:{{+254700000001}}:feedback"),
        format!("{p}:o:{{+254700000001}}"),
    ];
    expected.sort();
    assert_eq!(fixture.keys().await, expected);

    let mut raw = raw_connection().await;
    // A session value is the 8-byte big-endian version, then the data.
    let value: Vec<u8> = redis::cmd("GET")
        .arg(format!("{p}:s:{{africastalking:ATUid_1}}"))
        .query_async(&mut raw)
        .await
        .expect("GET");
    assert_eq!(value, [&1u64.to_be_bytes()[..], b"data"].concat());
    // Opt-outs never expire; resumable copies do.
    let opt_out_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}:o:{{+254700000001}}"))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert_eq!(opt_out_ttl, -1);
    let resumable_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{p}:r:{{+254700000001}}:feedback"))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(resumable_ttl > 0 && resumable_ttl <= 60_000);
}

#[tokio::test]
async fn redis_corrupt_values_are_errors_not_panics() {
    let fixture = RedisFixture::new().await;
    let key = SessionKey::new("africastalking", "corrupt");
    let mut raw = raw_connection().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}:s:{{africastalking:corrupt}}", fixture.prefix))
        .arg("abc")
        .query_async(&mut raw)
        .await
        .expect("SET");
    let loaded = fixture.store.load(&key).await;
    assert!(
        matches!(loaded, Err(SessionStoreError::Corrupt(_))),
        "{loaded:?}"
    );
    let saved = fixture.store.save(&key, Some(1), b"x", MINUTE).await;
    assert!(
        matches!(saved, Err(SessionStoreError::Corrupt(_))),
        "{saved:?}"
    );
    // The message says what is wrong without echoing the value.
    let message = loaded.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("corrupt") && !message.contains("abc"),
        "{message}"
    );
}

#[tokio::test]
async fn redis_load_and_save_are_one_round_trip_each() {
    let proxy = Proxy::start().await;
    let fixture = RedisFixture::via(&proxy.url(), TEST_RESPONSE_TIMEOUT).await;
    let store = &fixture.store;
    let key = SessionKey::new("africastalking", "round-trips");
    // Connecting loads the save script, so that the first update is already a single EVALSHA
    // even on a Redis that never saw the script.
    let connect = proxy.take_commands();
    assert!(
        connect.contains(&"SCRIPT".to_string()),
        "connect sent {connect:?}"
    );

    assert_eq!(store.load(&key).await.expect("load"), None);
    assert_eq!(proxy.take_commands(), ["GET"], "load of a missing session");
    store
        .save(&key, None, b"first", MINUTE)
        .await
        .expect("save");
    // A new session needs no script: `SET NX` is the compare-and-set against "absent".
    assert_eq!(proxy.take_commands(), ["SET"], "first save");
    store.load(&key).await.expect("load");
    assert_eq!(proxy.take_commands(), ["GET"], "load");
    store
        .save(&key, Some(1), b"second", MINUTE)
        .await
        .expect("save");
    assert_eq!(proxy.take_commands(), ["EVALSHA"], "save");
    store
        .save(&key, Some(1), b"stale", MINUTE)
        .await
        .expect("save");
    assert_eq!(proxy.take_commands(), ["EVALSHA"], "conflicting save");
    // Creating a session that exists: the refused `SET NX`, then its version is read.
    let exists = store
        .save(&key, None, b"again", MINUTE)
        .await
        .expect("save");
    assert_eq!(exists, SaveOutcome::Conflict { current: Some(2) });
    assert_eq!(
        proxy.take_commands(),
        ["SET", "GETRANGE"],
        "creation of an existing session"
    );
    // A dial: the session and the resumable copy, two `GET`s pipelined.
    store
        .load_with_resumable(&key, "+254", "flow")
        .await
        .expect("load with resumable");
    assert_eq!(proxy.take_commands(), ["GET", "GET"], "load_with_resumable");
    store.take_resumable("+254", "flow").await.expect("take");
    assert_eq!(proxy.take_commands(), ["GETDEL"], "take_resumable");
}

#[tokio::test]
async fn redis_stalled_server_gives_a_timeout_error_not_a_hang() {
    let proxy = Proxy::start().await;
    let fixture = RedisFixture::via(&proxy.url(), Duration::from_millis(200)).await;
    let store = &fixture.store;
    let key = SessionKey::new("africastalking", "stalled");
    store
        .save(&key, None, b"before", MINUTE)
        .await
        .expect("save before the stall");

    proxy.stall(true);
    // The outer bound only keeps a broken implementation from hanging the test run.
    let loaded = tokio::time::timeout(Duration::from_secs(10), store.load(&key))
        .await
        .expect("load must give up on its own");
    assert!(
        matches!(loaded, Err(SessionStoreError::Timeout { .. })),
        "{loaded:?}"
    );
    let saved = tokio::time::timeout(
        Duration::from_secs(10),
        store.save(&key, Some(1), b"x", MINUTE),
    )
    .await
    .expect("save must give up on its own");
    assert!(
        matches!(saved, Err(SessionStoreError::Timeout { .. })),
        "{saved:?}"
    );
    let message = loaded.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("did not answer within 200 ms"),
        "{message}"
    );

    // Once Redis answers again, the same store works again.
    proxy.stall(false);
    let stored = tokio::time::timeout(Duration::from_secs(10), store.load(&key))
        .await
        .expect("load after the stall")
        .expect("load after the stall");
    assert!(stored.is_some());
}

#[tokio::test]
async fn redis_connect_refuses_prefixes_that_break_the_layout() {
    for prefix in ["", "a{b}", "with space"] {
        let result = RedisSessions::connect(&redis_url(), prefix, TEST_RESPONSE_TIMEOUT).await;
        assert!(
            matches!(result, Err(SessionStoreError::InvalidPrefix { .. })),
            "{prefix:?} accepted"
        );
    }
}

#[tokio::test]
async fn redis_connect_to_nothing_fails_instead_of_hanging() {
    // A port that was free a moment ago and has no listener now.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        RedisSessions::connect(
            &format!("redis://{addr}/"),
            "baraza-test",
            Duration::from_millis(200),
        ),
    )
    .await
    .expect("connect must give up on its own");
    assert!(result.is_err());
}

async fn save_and_remember_writes_the_session_and_the_resume_copy(store: Arc<SessionStore>) {
    use baraza::session_store::ResumeCopy;
    let key = SessionKey::new("ussd", "remember");
    let put = ResumeCopy::Put {
        subscriber: "+254700000009",
        flow_id: "survey",
        data: b"copy-1",
        ttl: MINUTE,
    };
    let first = store
        .save_and_remember(&key, None, b"state-1", MINUTE, put)
        .await
        .expect("save");
    assert_eq!(first, SaveOutcome::Saved { version: 1 });
    assert_eq!(
        store.load(&key).await.expect("load").map(|s| s.data),
        Some(b"state-1".to_vec())
    );
    assert_eq!(
        store
            .get_resumable("+254700000009", "survey")
            .await
            .expect("get"),
        Some(b"copy-1".to_vec())
    );
    let keep = store
        .save_and_remember(&key, Some(1), b"state-2", MINUTE, ResumeCopy::Keep)
        .await
        .expect("save");
    assert_eq!(keep, SaveOutcome::Saved { version: 2 });
    assert_eq!(
        store
            .get_resumable("+254700000009", "survey")
            .await
            .expect("get"),
        Some(b"copy-1".to_vec()),
        "Keep leaves the copy alone"
    );
    let stale = store
        .save_and_remember(&key, Some(1), b"stale", MINUTE, ResumeCopy::Keep)
        .await
        .expect("save");
    assert!(
        matches!(stale, SaveOutcome::Conflict { current: Some(2) }),
        "{stale:?}"
    );
    let clear = ResumeCopy::Clear {
        subscriber: "+254700000009",
        flow_id: "survey",
    };
    let done = store
        .save_and_remember(&key, Some(2), b"state-3", MINUTE, clear)
        .await
        .expect("save");
    assert_eq!(done, SaveOutcome::Saved { version: 3 });
    assert_eq!(
        store
            .get_resumable("+254700000009", "survey")
            .await
            .expect("get"),
        None
    );
}

async fn load_with_resumable_reads_the_session_and_the_copy(store: Arc<SessionStore>) {
    let key = SessionKey::new("ussd", "dial");
    assert_eq!(
        store
            .load_with_resumable(&key, "+254700000010", "survey")
            .await
            .expect("load"),
        (None, None)
    );
    store
        .save(&key, None, b"state-1", MINUTE)
        .await
        .expect("save");
    store
        .put_resumable("+254700000010", "survey", b"copy-1", MINUTE)
        .await
        .expect("put");
    let (stored, copy) = store
        .load_with_resumable(&key, "+254700000010", "survey")
        .await
        .expect("load");
    assert_eq!(
        stored,
        Some(Stored {
            version: 1,
            data: b"state-1".to_vec()
        })
    );
    assert_eq!(copy, Some(b"copy-1".to_vec()));
    // Another flow's copy is not this one.
    let (_, other) = store
        .load_with_resumable(&key, "+254700000010", "other")
        .await
        .expect("load");
    assert_eq!(other, None);
}
