//! TLS for the gateway's connections to its own stores (sessions in Redis, answers in
//! PostgreSQL): the configured PEM files ([`crate::config::TlsFiles`]) read and checked once,
//! at start, and the rustls client settings built from them.
//!
//! Whether a connection uses TLS is the store URL's business (`rediss://`, `sslmode`); this
//! module only says what the server's certificate must chain to (the configured CA file, or
//! the Mozilla roots built into the binary) and which certificate we present. It never opens
//! a connection, never reads a file after start, and never prints key material (`Debug`
//! names the files, not their contents).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsFiles;

/// Why the configured TLS files cannot be used; every message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is not usable as {what}: {message}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{0}")]
    Incomplete(&'static str),
    #[error("the client certificate {cert} and key {key} cannot be used together: {message}")]
    ClientIdentity {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCheck {
    /// Nothing but the handshake's own signatures: the link is encrypted, but anyone on the
    /// path could stand in for the server (libpq's `prefer`/`require` without a CA file).
    EncryptOnly,
    /// The certificate chains to a trusted root; the name it was reached by is not checked
    /// (libpq's `verify-ca`).
    Chain,
    /// The certificate chains to a trusted root and names the host (libpq's `verify-full`).
    ChainAndName,
}

/// The CA file, as read.
struct CaFile {
    path: PathBuf,
    pem: Vec<u8>,
    roots: RootCertStore,
}

/// Our certificate and key for mutual TLS, as read.
struct ClientIdentity {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The checked contents of one store's [`TlsFiles`]; empty when none is set.
#[derive(Default)]
pub struct TlsMaterial {
    ca: Option<CaFile>,
    client: Option<ClientIdentity>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_file", &self.ca.as_ref().map(|ca| &ca.path))
            .field(
                "client_cert_file",
                &self.client.as_ref().map(|c| &c.cert_path),
            )
            .field(
                "client_key_file",
                &self.client.as_ref().map(|c| &c.key_path),
            )
            .finish()
    }
}

impl TlsMaterial {
    /// Reads and checks the files `files` names: the CA file must hold at least one
    /// certificate, and the client certificate and key must come together and match.
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
        let ca = files.ca_file.as_deref().map(read_ca).transpose()?;
        let client = match (&files.client_cert_file, &files.client_key_file) {
            (Some(cert), Some(key)) => Some(read_client_identity(cert, key)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError::Incomplete(
                    "client_cert_file is set without client_key_file",
                ));
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete(
                    "client_key_file is set without client_cert_file",
                ));
            }
        };
        let material = TlsMaterial { ca, client };
        material.check_client_identity()?;
        Ok(material)
    }

    /// Whether any file was configured.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }

    /// The CA file, if one is configured.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_ref().map(|ca| ca.path.as_path())
    }

    /// The CA file's PEM text, for clients that take PEM (the Redis client).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|ca| ca.pem.as_slice())
    }

    /// The client certificate chain's and key's PEM text, for clients that take PEM.
    pub fn client_pem(&self) -> Option<(&[u8], &[u8])> {
        self.client
            .as_ref()
            .map(|c| (c.cert_pem.as_slice(), c.key_pem.as_slice()))
    }

    /// A rustls client configuration checking the server as `check` says, against the CA
    /// file (or the Mozilla roots), presenting the client certificate if one is configured.
    pub fn client_config(&self, check: ServerCheck) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots());
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            ServerCheck::EncryptOnly => Arc::new(NamelessVerifier {
                chain_to: None,
                provider: Arc::clone(&provider),
            }),
            ServerCheck::Chain => Arc::new(NamelessVerifier {
                chain_to: Some(roots),
                provider: Arc::clone(&provider),
            }),
            ServerCheck::ChainAndName => {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots,
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| self.ca_error(e.to_string()))?
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| TlsError::Incomplete("the TLS library offers no protocol version"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.client {
            None => Ok(builder.with_no_client_auth()),
            Some(client) => builder
                .with_client_auth_cert(client.chain.clone(), client.key.clone_key())
                .map_err(|e| client.error(e.to_string())),
        }
    }

    /// The trusted roots: the CA file's certificates, or the Mozilla roots.
    fn roots(&self) -> RootCertStore {
        match &self.ca {
            Some(ca) => ca.roots.clone(),
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        }
    }

    /// What a server's certificate is checked against, in words, for error messages.
    pub fn trusted(&self) -> String {
        match self.ca_file() {
            Some(path) => format!("the CA file {}", path.display()),
            None => "the Mozilla roots (set ca_file for a private CA)".into(),
        }
    }

    fn ca_error(&self, message: String) -> TlsError {
        TlsError::Pem {
            path: self.ca_file().map(Path::to_path_buf).unwrap_or_default(),
            what: "CA certificates",
            message,
        }
    }

    /// Building a configuration once checks that the key belongs to the certificate and is
    /// of a kind rustls can sign with, so a wrong pair stops the start, not the first connect.
    fn check_client_identity(&self) -> Result<(), TlsError> {
        if self.client.is_some() {
            self.client_config(ServerCheck::ChainAndName)?;
        }
        Ok(())
    }
}

impl ClientIdentity {
    fn error(&self, message: String) -> TlsError {
        TlsError::ClientIdentity {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            message,
        }
    }
}

/// Makes ring the process's rustls provider, for clients that build their TLS settings from
/// the process default (the Redis client): with a second provider linked in some day, rustls
/// would otherwise refuse to pick one. Harmless when a default is already installed.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The reason rustls gave, when `error` or one of its causes is a TLS failure (a refused
/// certificate, a failed handshake).
pub fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(reason) = error.downcast_ref::<rustls::Error>() {
            return Some(reason);
        }
        cause = next_cause(error);
    }
    None
}

/// A failed TLS connection in words: which side refused, rustls's reason, and `checks` (what
/// the server's certificate was checked against) when it was the server's certificate.
pub fn failure_message(reason: &rustls::Error, checks: &str) -> String {
    use rustls::AlertDescription as Alert;
    match reason {
        rustls::Error::InvalidCertificate(_) => {
            format!("the server's certificate was refused: {reason} ({checks})")
        }
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::AccessDenied,
        ) => format!(
            "the server refused the connection: {reason} (a server that wants a client \
             certificate needs client_cert_file and client_key_file, from a CA it trusts)"
        ),
        _ => format!("{reason} ({checks})"),
    }
}

/// The error `error` wraps. An I/O error's and a shared error's `source` skip the error they
/// wrap (they answer with its cause), so those two are opened here.
fn next_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return Some(inner);
    }
    if let Some(shared) = error.downcast_ref::<Shared>() {
        return Some(shared.as_ref());
    }
    error.source()
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Every `CERTIFICATE` block of a PEM file; none at all is an error.
fn read_certificates(
    path: &Path,
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |message: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
        message,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(e.to_string()))?;
    if certificates.is_empty() {
        return Err(problem("it holds no PEM CERTIFICATE block".into()));
    }
    Ok(certificates)
}

fn read_ca(path: &Path) -> Result<CaFile, TlsError> {
    const WHAT: &str = "CA certificates";
    let pem = read_file(path)?;
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path, &pem, WHAT)? {
        roots.add(certificate).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: WHAT,
            message: e.to_string(),
        })?;
    }
    Ok(CaFile {
        path: path.to_path_buf(),
        pem,
        roots,
    })
}

fn read_client_identity(cert_path: &Path, key_path: &Path) -> Result<ClientIdentity, TlsError> {
    let cert_pem = read_file(cert_path)?;
    let chain = read_certificates(cert_path, &cert_pem, "a client certificate")?;
    let key_pem = read_file(key_path)?;
    // The parser's message never quotes the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_path.to_path_buf(),
        what: "a private key",
        message: e.to_string(),
    })?;
    Ok(ClientIdentity {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        cert_pem,
        key_pem,
        chain,
        key,
    })
}

/// [`ServerCheck::Chain`] (with roots) and [`ServerCheck::EncryptOnly`] (without): the usual
/// chain check against the roots when there are roots, never the name check. The handshake
/// signatures are checked either way (the server proves it holds the key of the certificate it
/// sent, whoever issued it).
#[derive(Debug)]
struct NamelessVerifier {
    /// `None`: any certificate is accepted.
    chain_to: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NamelessVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.chain_to {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
