//! The HTTP client of the join policy's backend webhook (`hub::Webhook`):
//! one POST over plain HTTP/1.1 per question, hyper's own client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::hub::{BoxFuture, Webhook};

/// Asks with a fresh HTTP/1.1 connection per question (answers are cached
/// by the authorizer, so questions are rare).
#[derive(Debug, Default)]
pub(crate) struct HyperWebhook;

impl Webhook for HyperWebhook {
    fn post<'a>(&'a self, url: &'a str, body: String) -> BoxFuture<'a, Result<u16, String>> {
        Box::pin(async move { ask(url, body).await.map_err(|e| e.to_string()) })
    }
}

/// One POST to the backend over plain HTTP/1.1; returns the status.
async fn ask(url: &str, body: String) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    driver.abort();
    Ok(status.as_u16())
}
