//! The two HTTP servers, on hyper: the client port (hubs, negotiate,
//! transports; over TLS when a certificate is set, `tls.rs`) and the admin
//! port (metrics, probes, the HTTP bridge; always plain HTTP). This is the
//! edge where errors become status codes (`error.rs`). The HTTP clients
//! live here too: the join webhook's and browser push's (`push_client.rs`).

mod admin;
mod admin_api;
mod admin_page;
mod client;
mod error;
mod push_client;
mod query;
mod readiness;
mod tls;
mod webhook;

pub(crate) use admin::{handle as admin_handle, handle_starting as admin_handle_starting, AdminState};
pub(crate) use client::{ClientState, Cors};
pub(crate) use error::Body;
pub(crate) use push_client::HyperPushClient;
pub(crate) use readiness::{Phase, Readiness};
pub(crate) use tls::Tls;
pub(crate) use webhook::HyperWebhook;

use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The address of the client that sent a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// Drops the HTTP connection a request came on, socket and all, when
/// cancelled: a response that streams (Server-Sent Events) to a client
/// that stopped reading cannot end by itself, since hyper would wait
/// forever to write the rest. In each request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct ConnAbort(pub CancellationToken);

/// Accepts connections on `listener` until `stop`, serving each with
/// `service` on a task owned by `tasks`; with `tls`, each connection first
/// completes a TLS handshake on its own task, so a slow or failed handshake
/// holds up no other connection. On `stop` the listener closes and idle
/// keep-alive connections finish gracefully.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    service: S,
    stop: CancellationToken,
    tasks: TaskTracker,
    name: &'static str,
    header_timeout: std::time::Duration,
    tls: Option<Tls>,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let inner = service.clone();
        let abort = CancellationToken::new();
        let request_abort = abort.clone();
        // Handlers learn the client's address, and how to drop its
        // connection, from the request extensions.
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            req.extensions_mut().insert(ConnAbort(request_abort.clone()));
            inner.call(req)
        });
        let stop = stop.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let ends = Ends { stop, abort };
            let Some(tls) = tls else {
                return serve_connection(TokioIo::new(stream), service, ends, name, peer, header_timeout).await;
            };
            let handshake = tokio::select! {
                h = tls.accept(stream, header_timeout) => h,
                _ = ends.stop.cancelled() => return,
            };
            match handshake {
                Ok(stream) => serve_connection(TokioIo::new(stream), service, ends, name, peer, header_timeout).await,
                Err(e) => tracing::debug!(server = name, peer = %peer, error = %e, "connection refused before HTTP"),
            }
        });
    }
    tracing::info!(server = name, "listener closed");
}

/// What ends one HTTP connection from outside.
struct Ends {
    /// The server stops: the connection finishes gracefully.
    stop: CancellationToken,
    /// A handler drops it at once (see [`ConnAbort`]).
    abort: CancellationToken,
}

/// Serves HTTP/1.1 (with upgrades, for WebSockets) on one connection, plain
/// or TLS, until it ends, `stop` asks it to finish gracefully, or a handler
/// aborts it (the socket is dropped).
async fn serve_connection<I, S>(
    io: I,
    service: S,
    ends: Ends,
    name: &'static str,
    peer: SocketAddr,
    header_timeout: std::time::Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Half-close stays off (hyper's default): a client that closes its
    // socket while its request waits (a long poll it gave up on) ends the
    // connection at the EOF and drops the request's future, which is how
    // Long Polling learns that the poll takes nothing (transport/long_polling.rs).
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = ends.abort.cancelled() => {
            tracing::debug!(server = name, peer = %peer, "http connection dropped: its client stopped reading");
            return;
        }
        _ = ends.stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = ends.abort.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(server = name, peer = %peer, error = %e, "http connection ended with an error");
    }
}

/// The client port's service: the hub routes behind the CORS layer.
pub(crate) fn client_service(
    state: std::sync::Arc<ClientState>,
    cors: Cors,
) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = impl Send>
       + Clone
       + Send
       + 'static {
    let svc = tower::ServiceBuilder::new()
        .layer(cors.layer())
        .service(tower::service_fn(move |req| client::handle(state.clone(), req)));
    hyper_util::service::TowerToHyperService::new(svc)
}
