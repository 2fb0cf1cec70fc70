//! Private servers a test owns: a `redis-server` and a PostgreSQL cluster of its own, on a
//! free port, in a temporary folder, gone when the value is dropped (process stopped, folder
//! removed); and `TestCa`, certificates made for them. A test can then break, restart or
//! reconfigure its server (TLS only, say) without disturbing the shared services others use.
//!
//! Readiness is the server's own signal (Redis's "Ready to accept connections" log line,
//! PostgreSQL's `ready` status in `postmaster.pid`), waited for with a bound; a server that
//! exits or stays silent fails the test with its log.
//!
//! PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` user
//! (`initdb` and the server are started with that user's ids).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long a stopping server may take before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A certificate authority of a test's own, and server certificates it signs.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key as PEM files, and the file of the CA that issued it.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (each call a new key: two CAs never trust each other's
    /// certificates).
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        TestCa { issuer }
    }

    /// Writes this CA's certificate to `path`.
    pub fn write_ca(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).expect("write CA file");
        path.to_path_buf()
    }

    /// A server certificate for `names` (DNS names or IP addresses), written with its key
    /// and this CA into `dir` as `<stem>.crt`, `<stem>.key`, `<stem>-ca.crt`.
    pub fn server_certificate(&self, dir: &Path, stem: &str, names: &[&str]) -> IssuedCertificate {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("server params");
        self.issue(
            dir,
            stem,
            params,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose common name is `user` (PostgreSQL's `clientcert=verify-full`
    /// compares it with the user name), written like [`TestCa::server_certificate`].
    pub fn client_certificate(&self, dir: &Path, stem: &str, user: &str) -> IssuedCertificate {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, user);
        self.issue(
            dir,
            stem,
            params,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        mut params: rcgen::CertificateParams,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> IssuedCertificate {
        if params.distinguished_name.iter().next().is_none() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, stem);
        }
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let files = IssuedCertificate {
            cert_file: dir.join(format!("{stem}.crt")),
            key_file: dir.join(format!("{stem}.key")),
            ca_file: dir.join(format!("{stem}-ca.crt")),
        };
        std::fs::write(&files.cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&files.key_file, key.serialize_pem()).expect("write key");
        self.write_ca(&files.ca_file);
        files
    }
}

/// Waits (bounded) until `ready` says so; fails with `log` when the process exits first or
/// the time runs out.
fn wait_until_ready(child: &mut Child, what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if started.elapsed() > READY_WITHIN {
            panic!(
                "{what} was not ready within {READY_WITHIN:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` with `signal` (a clean shutdown), killing it if it takes too long.
fn stop(child: &mut Child, signal: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < STOP_WITHIN {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether a TLS server asks clients for a certificate.
#[derive(Clone, Copy)]
enum ClientCertificates {
    NotAsked,
    Required,
}

/// A `redis-server` of the test's own, keeping nothing on disk, listening on 127.0.0.1 only.
pub struct PrivateRedis {
    child: Child,
    /// The server's arguments, kept for [`PrivateRedis::restart`].
    args: Vec<std::ffi::OsString>,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Plain TCP only.
    pub fn start() -> PrivateRedis {
        Self::start_with(None)
    }

    /// TLS only (`--port 0`), with `certificate`; clients need not present certificates.
    pub fn start_tls(certificate: &IssuedCertificate) -> PrivateRedis {
        Self::start_with(Some((certificate, ClientCertificates::NotAsked)))
    }

    /// TLS only, and every client must present a certificate from `certificate`'s CA.
    pub fn start_mutual_tls(certificate: &IssuedCertificate) -> PrivateRedis {
        Self::start_with(Some((certificate, ClientCertificates::Required)))
    }

    fn start_with(certificate: Option<(&IssuedCertificate, ClientCertificates)>) -> PrivateRedis {
        let dir = tempfile::tempdir().expect("redis folder");
        let port = free_port();
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            args.extend(items.iter().map(|item| item.as_ref().to_os_string()));
        };
        push(&[
            &"--bind",
            &"127.0.0.1",
            &"--save",
            &"",
            &"--appendonly",
            &"no",
        ]);
        push(&[
            &"--dir",
            &dir.path(),
            &"--logfile",
            &dir.path().join("redis.log"),
        ]);
        let port_text = port.to_string();
        match certificate {
            None => push(&[&"--port", &port_text]),
            Some((files, clients)) => {
                let required = match clients {
                    ClientCertificates::NotAsked => "no",
                    ClientCertificates::Required => "yes",
                };
                push(&[&"--port", &"0", &"--tls-port", &port_text]);
                push(&[&"--tls-cert-file", &files.cert_file]);
                push(&[&"--tls-key-file", &files.key_file]);
                push(&[&"--tls-ca-cert-file", &files.ca_file]);
                push(&[&"--tls-auth-clients", &required]);
            }
        }
        let child = spawn_redis(&args, dir.path());
        PrivateRedis {
            child,
            args,
            port,
            tls: certificate.is_some(),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<port>` for a TLS server, `redis://...` otherwise.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone: nothing is kept on disk) and starts it again on
    /// the same port with the same settings, ready.
    pub fn restart(&mut self) {
        stop(&mut self.child, "-TERM");
        self.start_again();
    }

    /// Stops the server (SIGKILL: gone at once, as a crashed one is); [`Self::start_again`]
    /// brings it back.
    pub fn stop(&mut self) {
        stop(&mut self.child, "-KILL");
    }

    /// Starts a stopped server again on the same port with the same settings, ready.
    pub fn start_again(&mut self) {
        self.child = spawn_redis(&self.args, self.dir.path());
    }
}

/// Starts `redis-server` with `args` and waits until its log (in `dir`, begun afresh) says
/// it is ready.
fn spawn_redis(args: &[std::ffi::OsString], dir: &Path) -> Child {
    let log = dir.join("redis.log");
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (installed by .ci/services.sh)");
    wait_until_ready(&mut child, "redis-server", &log, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("Ready to accept connections"))
    });
    child
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        stop(&mut self.child, "-TERM");
    }
}

/// A PostgreSQL cluster of the test's own (database `postgres`, user `postgres`, trust
/// authentication), listening on 127.0.0.1 and a socket in its folder.
pub struct PrivatePostgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The uid and gid to run PostgreSQL as: the `postgres` user under root, else `None` (this
/// user).
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> u32 {
        let out = Command::new("id").args(args).output().expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("`id {}` answered no number", args.join(" ")))
    };
    if id(&["-u"]) != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"]), id(&["-g", "postgres"])))
}

/// The newest installed server's binaries (`/usr/lib/postgresql/<version>/bin`, Debian).
fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .expect("PostgreSQL installed under /usr/lib/postgresql (.ci/services.sh)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server with initdb").1
}

impl PrivatePostgres {
    /// A cluster that speaks TLS with `certificate` and accepts only TLS connections from
    /// 127.0.0.1 (`pg_hba.conf`: `hostssl` only), so a plain connection is refused. Database
    /// `template1` also wants a client certificate from `certificate`'s CA naming the user
    /// (`clientcert=verify-full`), for mutual TLS; the others ask for none.
    pub fn start_tls_only(certificate: &IssuedCertificate) -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("postgres folder");
        let ids = postgres_ids();
        let data = dir.path().join("data");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::copy(&certificate.cert_file, &cert).expect("copy certificate");
        std::fs::copy(&certificate.key_file, &key).expect("copy key");
        let ca = dir.path().join("ca.crt");
        std::fs::copy(&certificate.ca_file, &ca).expect("copy CA");
        set_mode(&key, 0o600);
        if let Some((uid, gid)) = ids {
            for path in [dir.path(), &cert, &key, &ca] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }
        let bin = postgres_bin();
        let log = dir.path().join("postgres.log");
        let initdb = as_postgres(Command::new(bin.join("initdb")), ids)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl template1 all 127.0.0.1/32 trust clientcert=verify-full\n\
             hostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        let port = free_port();
        let log_file = std::fs::File::create(&log).expect("postgres log");
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown log");
        }
        let mut child = as_postgres(Command::new(bin.join("postgres")), ids)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .arg("-c")
            .arg(format!("ssl_ca_file={}", ca.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=20"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("postgres starts");
        let pid_file = data.join("postmaster.pid");
        wait_until_ready(&mut child, "postgres", &log, || {
            // The eighth line of postmaster.pid is the server's status.
            std::fs::read_to_string(&pid_file)
                .is_ok_and(|text| text.lines().nth(7).is_some_and(|s| s.trim() == "ready"))
        });
        PrivatePostgres { child, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `postgres` as user `postgres` at `host` (a name or `127.0.0.1`)
    /// reached at 127.0.0.1, with extra query parameters (e.g. `sslmode=verify-full`).
    pub fn url(&self, host: &str, query: &str) -> String {
        self.url_of("postgres", host, query)
    }

    /// [`PrivatePostgres::url`] for `database` (`template1` wants a client certificate).
    pub fn url_of(&self, database: &str, host: &str, query: &str) -> String {
        let mut url = format!("postgres://postgres@{host}:{}/{database}", self.port);
        let mut parameters = Vec::new();
        if host != "127.0.0.1" {
            parameters.push("hostaddr=127.0.0.1");
        }
        if !query.is_empty() {
            parameters.push(query);
        }
        if !parameters.is_empty() {
            url.push('?');
            url.push_str(&parameters.join("&"));
        }
        url
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (backends end, shared memory is released).
        stop(&mut self.child, "-INT");
    }
}

/// `command` run as the `postgres` user when `ids` says so.
fn as_postgres(mut command: Command, ids: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = ids {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    command
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
