//! TLS on the client port. The certificate chain and key come from PEM
//! files (`SIDECAR_TLS_CERT_FILE`, `SIDECAR_TLS_KEY_FILE`) and are re-read
//! when the files change, so a renewal (cert-manager, a Kubernetes Secret
//! swapped under a mounted directory) needs no restart: the one rustls
//! `ServerConfig` asks [`CertFiles`] for the certificate at every handshake,
//! and `CertFiles` looks at the files at most once a second. A handshake that
//! fails, or a plain-HTTP request on the TLS port, ends that one connection
//! and nothing else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// How often the files' modification times are looked at, at most: once per
/// second of handshakes, never without one.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why the certificate files cannot be used. At start this stops the
/// process; on a reload it is logged and the previous certificate stays.
/// Every message starts with the setting it is about.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The file cannot be read.
    #[error("{setting}: cannot read {path}: {source}")]
    Read {
        /// `SIDECAR_TLS_CERT_FILE` or `SIDECAR_TLS_KEY_FILE`.
        setting: &'static str,
        /// The file.
        path: String,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{setting}: {path} is not valid PEM: {source}")]
    Pem {
        /// `SIDECAR_TLS_CERT_FILE` or `SIDECAR_TLS_KEY_FILE`.
        setting: &'static str,
        /// The file.
        path: String,
        /// The parser's complaint.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file has no `CERTIFICATE` block.
    #[error("SIDECAR_TLS_CERT_FILE: {0} holds no PEM CERTIFICATE")]
    NoCertificate(String),
    /// The key file has no private key block.
    #[error("SIDECAR_TLS_KEY_FILE: {0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(String),
    /// The key is of a kind the crypto provider cannot sign with.
    #[error("SIDECAR_TLS_KEY_FILE: {path}: unusable private key: {source}")]
    Key {
        /// The key file.
        path: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The leaf certificate does not belong to the key (or cannot be parsed).
    #[error("SIDECAR_TLS_CERT_FILE: {cert}: the certificate does not match the key of SIDECAR_TLS_KEY_FILE ({key}): {source}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The crypto provider offers no protocol version rustls accepts.
    #[error("SIDECAR_TLS_CERT_FILE: cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Why one incoming connection was not served; logged at debug, since the
/// client is at fault and no other connection is affected.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    /// The client spoke plain HTTP to the TLS port (it was told so with a 400).
    #[error("plain HTTP on the TLS port")]
    PlainHttp,
    /// The client closed before sending anything.
    #[error("closed before the TLS handshake")]
    Closed,
    /// The handshake did not finish within the header timeout.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The handshake failed (bad ClientHello, no common cipher or protocol, ...).
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
}

/// The client port's TLS: an acceptor whose certificate follows the files.
/// Cheap to clone (the accept loop gives one to each connection task).
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Reads the certificate and key; unlike a later reload, a bad file is
    /// an error here, so the process does not start without a certificate.
    pub(crate) fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Arc::new(CertFiles::load(&config.cert_file, &config.key_file, provider.clone(), CHECK_EVERY)?);
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        // Hyper serves HTTP/1.1 here (WebSockets, SSE and Long Polling all
        // ride on it); a client offering only h2 is refused in the handshake.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(server)) })
    }

    /// Runs the TLS handshake on a fresh connection, within `timeout` (the
    /// same slowloris bound as the HTTP headers). A plain-HTTP request gets
    /// a 400 that says to use https:// instead of an unreadable TLS alert.
    pub(super) async fn accept(
        &self,
        mut stream: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let handshake = async {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) => {}
                Err(e) => return Err(HandshakeError::Failed(e)),
            }
            // A TLS record starts with its content type (22 for a handshake);
            // an HTTP request starts with its method's first letter.
            if first[0].is_ascii_alphabetic() {
                refuse_plain_http(&mut stream).await;
                return Err(HandshakeError::PlainHttp);
            }
            self.acceptor.accept(stream).await.map_err(HandshakeError::Failed)
        };
        tokio::time::timeout(timeout, handshake).await.unwrap_or(Err(HandshakeError::Timeout))
    }
}

/// Reads the request head (so closing does not reset the connection under
/// the reply), then answers 400 and closes.
async fn refuse_plain_http(stream: &mut TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = "This port serves TLS: use https:// or wss://\n";
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The certificate and key files, with the pair last read from them that
/// worked. rustls calls [`ResolvesServerCert::resolve`] for every handshake;
/// that looks at the files' modification times at most once per
/// `check_every` and re-reads them when either changed. There is no
/// background task.
#[derive(Debug)]
pub(super) struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// Stamps of the versions last read, good or not: a bad file is
    /// reported once, and read again only when it changes again.
    seen: [Stamp; 2],
    checked_at: Instant,
}

/// What tells a changed file: its modification time and length (a
/// Kubernetes Secret update replaces the file behind a symlink, so both
/// follow the new version).
type Stamp = Option<(SystemTime, u64)>;

impl CertFiles {
    /// Reads both files; a bad one is an error.
    pub(super) fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> Result<CertFiles, TlsError> {
        let seen = [stamp(cert), stamp(key)];
        let current = Arc::new(read_pair(cert, key, &provider)?);
        let state = State { current, seen, checked_at: Instant::now() };
        Ok(CertFiles { cert: cert.to_owned(), key: key.to_owned(), provider, check_every, state: Mutex::new(state) })
    }

    /// The pair to serve, re-read first if the files changed since the last
    /// look. The lock is never held during file I/O.
    pub(super) fn current(&self) -> Arc<CertifiedKey> {
        let (current, seen) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.checked_at.elapsed() < self.check_every {
                return state.current.clone();
            }
            state.checked_at = Instant::now();
            (state.current.clone(), state.seen)
        };
        let now = [stamp(&self.cert), stamp(&self.key)];
        if now == seen {
            return current;
        }
        let fresh = read_pair(&self.cert, &self.key, &self.provider);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.seen = now;
        match fresh {
            Ok(pair) => {
                tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "TLS certificate reloaded");
                state.current = Arc::new(pair);
            }
            Err(error) => tracing::warn!(
                %error,
                "TLS certificate files changed but cannot be used; still serving the previous certificate"
            ),
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and checks one certificate chain and its key.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    const CERT: &str = "SIDECAR_TLS_CERT_FILE";
    const KEY: &str = "SIDECAR_TLS_KEY_FILE";
    let shown = |p: &Path| p.display().to_string();
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read { setting: CERT, path: shown(cert), source })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read { setting: KEY, path: shown(key), source })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { setting: CERT, path: shown(cert), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(shown(cert)));
    }
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoKey(shown(key))),
        Err(source) => return Err(TlsError::Pem { setting: KEY, path: shown(key), source }),
    };
    let signing =
        provider.key_provider.load_private_key(private).map_err(|source| TlsError::Key { path: shown(key), source })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        // A key type whose public half rustls cannot derive: accept it as
        // rustls itself does; a real mismatch fails every handshake anyway.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(source) => Err(TlsError::Mismatch { cert: shown(cert), key: shown(key), source }),
    }
}

#[cfg(test)]
mod tests;
