//! A raw WebSocket client for the cases the official client never produces.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A raw WebSocket to the sidecar.
pub struct RawWs {
    pub ws: WebSocketStream<TcpStream>,
}

impl RawWs {
    /// Opens `ws://127.0.0.1:port{path}`; `Err(status)` when refused.
    pub async fn connect(port: u16, path: &str) -> Result<RawWs, u16> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp connect");
        let url = format!("ws://127.0.0.1:{port}{path}");
        match tokio_tungstenite::client_async(url, stream).await {
            Ok((ws, _)) => Ok(RawWs { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    /// Sends text.
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text message, or `None` when the socket closed.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            let next = tokio::time::timeout(super::WAIT, self.ws.next()).await.expect("a message within the wait");
            match next {
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(Message::Binary(b))) => return Some(String::from_utf8_lossy(&b).to_string()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until the WebSocket close frame; returns its status code
    /// (`None` for a close frame without one, which clients see as 1005).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let next = tokio::time::timeout(super::WAIT, self.ws.next()).await.expect("a close frame within the wait");
            match next {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    }

    /// Reads records until one of `type`; returns it parsed.
    pub async fn recv_type(&mut self, ty: u64) -> Option<serde_json::Value> {
        loop {
            let text = self.recv().await?;
            for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
                let v: serde_json::Value = serde_json::from_str(record).expect("JSON record");
                if v["type"] == ty {
                    return Some(v);
                }
            }
        }
    }
}
