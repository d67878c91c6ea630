//! The publisher on the in-process bus, and `POST /internal/events`'s
//! check before it.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::envelope::Schemas;
use crate::fault::{Blame, Fault};
use crate::pipeline::{Input, InputReceiver};

fn routes(text: Option<&str>) -> Arc<RouteTable> {
    let table = match text {
        Some(t) => RouteTable::parse("test.toml", t).expect("valid routes"),
        None => RouteTable::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/routes.toml")).expect("routes"),
    };
    Arc::new(table)
}

fn envelope(event_type: &str, payload: serde_json::Value) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: event_type.into(),
        timestamp: chrono::Utc::now(),
        room_id: "r1".into(),
        payload: payload.as_object().cloned().expect("an object").into(),
        metadata: None,
    }
}

fn memory(routes: Arc<RouteTable>) -> (Publisher, InputReceiver) {
    let (tx, rx) = crate::pipeline::channel(4);
    (Publisher::memory(routes, tx), rx)
}

#[tokio::test]
async fn the_in_process_bus_hands_events_to_the_pipeline_from_their_stream() {
    let (p, mut rx) = memory(routes(None));
    assert_eq!(
        p.publish_or_queue(envelope("status_change", json!({"a": 1}))).await.expect("accepted"),
        Published::Accepted
    );
    p.publish(envelope("typing_start", json!({}))).await.expect("published");
    let source = |input: Option<Input>| match input {
        Some(Input::Event(event)) => event.source.to_string(),
        other => panic!("one event from the bus, got {other:?}"),
    };
    assert_eq!(source(rx.try_recv()), "events:ticket");
    assert_eq!(source(rx.try_recv()), "events:chat");
    assert!(p.spool_flusher().is_none(), "nothing to spool without Redis");
    assert_eq!(Published::Queued.as_str(), "queued");
}

#[tokio::test]
async fn an_event_without_a_route_is_refused_as_the_publishers_fault() {
    let (p, mut rx) = memory(routes(None));
    let e = p.publish_or_queue(envelope("nope", json!({}))).await.expect_err("no route");
    assert_eq!(e.to_string(), "no route for event_type 'nope'");
    assert_eq!((e.fault(), e.reason()), (Fault::Publisher, "no_route"));
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn an_event_missing_a_named_argument_is_refused_before_the_bus() {
    let text = "[[hub]]\nname = \"a\"\npath = \"/a\"\n\n[[route]]\nevent_type = \"said\"\nhub = \"a\"\nmethod = \"Said\"\nstream = \"s\"\ndelivery = \"immediate\"\narguments = [\"payload.text\"]\n";
    let (p, mut rx) = memory(routes(Some(text)));
    let e = p.publish(envelope("said", json!({"other": 1}))).await.expect_err("missing");
    assert_eq!(e.to_string(), "route 'said': payload has no field 'text' (argument 1 of the route)");
    assert_eq!(e.reason(), "missing_argument");
    assert!(rx.try_recv().is_none());
    p.publish(envelope("said", json!({"text": "hi"}))).await.expect("complete");
    assert!(rx.try_recv().is_some());
}

#[tokio::test]
async fn a_stopped_pipeline_refuses_as_an_internal_fault() {
    let (p, rx) = memory(routes(None));
    drop(rx);
    let e = p.publish_or_queue(envelope("status_change", json!({}))).await.expect_err("closed");
    assert!(matches!(e, PublishError::Closed));
    assert_eq!((e.fault(), e.reason()), (Fault::Internal, "closed"));
}

#[tokio::test]
async fn a_posted_body_is_checked_against_the_schemas_first() {
    let schemas = Schemas::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/schemas")).expect("schemas");
    let (p, mut rx) = memory(routes(None));
    let e = crate::ingest::http::accept(b"{not json", &schemas, &p).await.expect_err("not json");
    assert!(e.to_string().starts_with("not JSON"), "{e}");
    let e = crate::ingest::http::accept(b"{\"event_type\":\"status_change\"}", &schemas, &p).await.expect_err("schema");
    assert!(matches!(e, crate::ingest::http::HttpIngestError::Invalid(_)), "{e}");
    assert!(rx.try_recv().is_none(), "nothing reached the bus");
}
