//! The HTTP client of browser push (`push::PushClient`): one HTTP/1.1
//! POST to a push service, hyper's connection API over a TCP stream, with
//! rustls (ring, webpki roots) for `https://`. A new connection per push
//! keeps this small; push services answer quickly and a sidecar sends a
//! push only to users who are offline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::push::{BoxFuture, PushClient};

/// Connect, TLS, request and answer together.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a push request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The endpoint is not a URL this client can reach.
    #[error("endpoint {0} is not an http(s) URL with a host")]
    Endpoint(String),
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed (or the name is not a valid server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built from the headers given.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// No answer in time.
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
}

/// Posts push messages.
#[derive(Clone)]
pub(crate) struct HyperPushClient {
    tls: tokio_rustls::TlsConnector,
}

impl Default for HyperPushClient {
    fn default() -> Self {
        HyperPushClient::new()
    }
}

impl PushClient for HyperPushClient {
    fn post<'a>(
        &'a self,
        endpoint: &'a str,
        headers: &'a [(&'static str, String)],
        body: Bytes,
    ) -> BoxFuture<'a, Result<u16, String>> {
        Box::pin(async move { self.send(endpoint, headers, body).await.map_err(|e| e.to_string()) })
    }
}

impl HyperPushClient {
    /// A client that trusts the Web PKI roots.
    pub(crate) fn new() -> HyperPushClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        HyperPushClient { tls: tokio_rustls::TlsConnector::from(Arc::new(config)) }
    }

    /// POSTs `body` to `endpoint` with `headers`; the answer's status.
    pub(crate) async fn send(&self, endpoint: &str, headers: &[(&str, String)], body: Bytes) -> Result<u16, SendError> {
        tokio::time::timeout(TIMEOUT, self.exchange(endpoint, headers, body)).await.map_err(|_| SendError::Timeout)?
    }

    async fn exchange(&self, endpoint: &str, headers: &[(&str, String)], body: Bytes) -> Result<u16, SendError> {
        let uri: http::Uri = endpoint.parse().map_err(|_| SendError::Endpoint(endpoint.to_string()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(SendError::Endpoint(endpoint.to_string()));
        };
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(SendError::Endpoint(endpoint.to_string())),
        };
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut request = http::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(body))?;
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(SendError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return send(tcp, request).await;
        }
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| SendError::Tls(e.to_string()))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| SendError::Tls(e.to_string()))?;
        send(tls, request).await
    }
}

async fn send<S>(io: S, request: http::Request<Full<Bytes>>) -> Result<u16, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection is driven beside the request and ends with it.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer = sender.send_request(request).await;
    driver.abort();
    Ok(answer?.status().as_u16())
}
