//! SignalR negotiate over the raw TCP connection. When the server keeps the
//! connection alive (as a browser would reuse it), the same socket is then
//! upgraded to the WebSocket: one socket and one ephemeral port per client.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest negotiate response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// What negotiate answered.
pub struct Negotiated {
    /// `connectionToken` (negotiateVersion 1), else `connectionId`.
    pub token: String,
    /// False when the server closes the connection after answering.
    pub reusable: bool,
}

/// The negotiate query: `@microsoft/signalr` adds `useStatefulReconnect=true`
/// after `withStatefulReconnect()`.
fn query(stateful: bool) -> &'static str {
    if stateful {
        "negotiateVersion=1&useStatefulReconnect=true"
    } else {
        "negotiateVersion=1"
    }
}

/// Whether the answer's grant of stateful reconnect matches what was
/// asked. A grant not asked for fails the start, as in the JS client; one
/// asked for and refused fails too, so a `--stateful` run never measures
/// plain clients under the stateful label.
fn check_grant(asked: bool, granted: bool) -> Result<(), String> {
    match (asked, granted) {
        (false, true) => Err("Client didn't negotiate Stateful Reconnect but the server did.".into()),
        (true, false) => Err("stateful reconnect asked for but not granted (useStatefulReconnect missing)".into()),
        _ => Ok(()),
    }
}

/// POSTs `<hub>/negotiate?negotiateVersion=1` (with `useStatefulReconnect=true`
/// when `stateful`) and reads the answer.
pub async fn negotiate(stream: &mut TcpStream, host: &str, hub: &str, stateful: bool) -> Result<Negotiated, String> {
    let query = query(stateful);
    let request = format!(
        "POST {hub}/negotiate?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nX-Requested-With: XMLHttpRequest\r\n\
         X-SignalR-User-Agent: signalr-loadgen/0.1\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        read_more(stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    let mut reusable = !status_line.starts_with("HTTP/1.0");
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" if value.contains("close") => reusable = false,
            _ => {}
        }
    }
    let mut body = buf.split_off(head_end);
    if chunked {
        body = dechunk(stream, body).await?;
    } else if let Some(n) = length {
        while body.len() < n {
            read_more(stream, &mut body).await?;
        }
        body.truncate(n);
    } else {
        return Err("response has neither a length nor chunks".into());
    }
    if status != "200" {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).chars().take(120).collect::<String>()));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("server error: {err}"));
    }
    check_grant(stateful, v.get("useStatefulReconnect").and_then(|g| g.as_bool()).unwrap_or(false))?;
    let token = v
        .get("connectionToken")
        .or_else(|| v.get("connectionId"))
        .and_then(|t| t.as_str())
        .ok_or("no connectionToken or connectionId")?
        .to_string();
    Ok(Negotiated { token, reusable })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    if buf.len() > MAX_RESPONSE {
        return Err("response too large".into());
    }
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) => Err("connection closed mid-response".into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Reads a chunked body whose first bytes are in `rest`.
async fn dechunk(stream: &mut TcpStream, mut rest: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(p) = memchr::memmem::find(&rest, b"\r\n") {
                break p;
            }
            read_more(stream, &mut rest).await?;
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        while rest.len() < line_end + 2 + size + 2 {
            read_more(stream, &mut rest).await?;
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest.drain(..line_end + 2 + size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

/// Percent-encodes a query value, keeping RFC 3986's unreserved characters.
pub fn encode_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateful_is_asked_and_its_grant_checked() {
        assert_eq!(query(false), "negotiateVersion=1");
        assert_eq!(query(true), "negotiateVersion=1&useStatefulReconnect=true");
        assert!(check_grant(false, false).is_ok() && check_grant(true, true).is_ok());
        assert!(check_grant(false, true).is_err(), "a grant not asked for");
        assert!(check_grant(true, false).is_err(), "asked for, refused");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(encode_query("AZaz09-._~"), "AZaz09-._~");
    }
}
