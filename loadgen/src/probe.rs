//! The Redis hop alone: one reader that blocks on the stream (XREAD BLOCK,
//! as the sidecar's XREADGROUP does) and times each entry from its send
//! stamp. Run beside the clients, it splits end-to-end latency into what
//! Redis and the wake-up of a blocked reader cost on this machine and what
//! the sidecar and the last hop add.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use hdrhistogram::Histogram;
use redis::Value;

use crate::{stats, sys};

/// Reads every new entry of `stream` until `stop`; the latency (µs) of
/// those stamped inside the window.
pub async fn run(client: redis::Client, stream: String, stop: Arc<AtomicBool>) -> Result<Histogram<u64>, String> {
    let mut hist = Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let mut con = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let mut last = "$".to_string();
    while !stop.load(Relaxed) {
        let reply: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        let now = sys::wall_ns();
        for (id, fields) in entries(&reply) {
            last = id;
            let sent = fields.iter().find_map(|f| sent_ns(f));
            if let Some(sent) = sent.filter(|s| stats::in_window(*s)) {
                hist.saturating_record((now.saturating_sub(sent) / 1000).max(1));
            }
        }
    }
    Ok(hist)
}

/// (id, field values) of each entry of an XREAD reply (RESP2 or RESP3).
fn entries(reply: &Value) -> Vec<(String, Vec<&[u8]>)> {
    let streams: Vec<&Value> = match reply {
        Value::Array(s) => s.iter().collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        let list = match s {
            Value::Array(pair) if pair.len() == 2 => &pair[1],
            other => other,
        };
        let Value::Array(items) = list else { continue };
        for item in items {
            let Value::Array(pair) = item else { continue };
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let values = fields
                .iter()
                .filter_map(|f| match f {
                    Value::BulkString(b) => Some(b.as_slice()),
                    _ => None,
                })
                .collect();
            out.push((String::from_utf8_lossy(id).into_owned(), values));
        }
    }
    out
}

fn sent_ns(field: &[u8]) -> Option<u64> {
    let key = b"\"sent_ns\":";
    let at = memchr::memmem::find(field, key)? + key.len();
    let digits = field[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&field[at..at + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_xread_reply() {
        let entry = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"payload".to_vec()),
                Value::BulkString(br#"{"a":1,"sent_ns":42}"#.to_vec()),
            ]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![Value::BulkString(b"s".to_vec()), Value::Array(vec![entry])])]);
        let got = entries(&reply);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "1-0");
        assert_eq!(got[0].1.iter().find_map(|f| sent_ns(f)), Some(42));
    }
}
