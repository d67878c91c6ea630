//! What a push message says: the event as the service worker receives it
//! (`event.data.json()`), within the one record a push message holds.

use serde_json::json;

use super::ece::MAX_PLAINTEXT;
use crate::pipeline::PushOffer;

/// The plaintext of the push message for `offer`:
/// `{event_id, event_type, method, timestamp, payload}`. A payload that
/// would not fit is left out and `truncated: true` tells the service
/// worker to fetch the notification instead.
pub(super) fn plaintext(offer: &PushOffer) -> Vec<u8> {
    let e = &offer.envelope;
    let timestamp = e.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut message = json!({
        "event_id": e.event_id,
        "event_type": e.event_type,
        "method": offer.method,
        "timestamp": timestamp,
        "payload": e.payload,
    });
    let full = message.to_string().into_bytes();
    if full.len() <= MAX_PLAINTEXT {
        return full;
    }
    if let Some(m) = message.as_object_mut() {
        m.remove("payload");
        m.insert("truncated".into(), true.into());
    }
    let short = message.to_string().into_bytes();
    // Only an absurd event_id or event_type could still not fit.
    if short.len() <= MAX_PLAINTEXT {
        short
    } else {
        json!({"truncated": true}).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::envelope::Envelope;

    fn offer(text: &str) -> PushOffer {
        let mut payload = serde_json::Map::new();
        payload.insert("text".into(), text.into());
        PushOffer {
            user: "u1".into(),
            hub: 0,
            method: "ReceiveNotification".into(),
            envelope: Envelope {
                event_id: "e-1".into(),
                event_type: "notification".into(),
                timestamp: chrono::Utc::now(),
                room_id: "user:u1".into(),
                payload: payload.into(),
                metadata: None,
            },
        }
    }

    #[test]
    fn the_event_goes_whole_when_it_fits() {
        let v: Value = serde_json::from_slice(&plaintext(&offer("hello"))).expect("json");
        assert_eq!(v["event_id"], "e-1");
        assert_eq!(v["event_type"], "notification");
        assert_eq!(v["method"], "ReceiveNotification");
        assert_eq!(v["payload"]["text"], "hello");
        assert!(v.get("truncated").is_none());
    }

    #[test]
    fn a_payload_too_large_for_one_record_is_left_out_and_said_so() {
        let bytes = plaintext(&offer(&"x".repeat(5000)));
        assert!(bytes.len() <= MAX_PLAINTEXT);
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["event_id"], "e-1");
        assert!(v.get("payload").is_none());
    }
}
