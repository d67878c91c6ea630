//! Traces over OTLP: a test receiver (gRPC and HTTP/protobuf, decoded with
//! the OTLP protobuf definitions) gets the span for an event published with
//! a known `traceparent`, under that trace id, with the fan-out attributes.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::*;
use tokio::sync::mpsc;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn grpc_receiver() -> (u16, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (port, rx)
}

async fn http_receiver() -> (u16, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let _ = tx.send(ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"));
                        let reply = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(bytes::Bytes::from(reply)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, rx)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value)
}

/// Waits for the span named `deliver chat_message`.
async fn event_span(rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>) -> (Span, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let req =
            tokio::time::timeout_at(deadline, rx.recv()).await.expect("a span within 15 s").expect("receiver open");
        for rs in req.resource_spans {
            let service: Vec<String> = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .filter(|a| a.key == "service.name")
                .filter_map(|a| match a.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(AnyValue::StringValue(s)) => Some(s),
                    _ => None,
                })
                .collect();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    if span.name == "deliver chat_message" {
                        return (span, service);
                    }
                }
            }
        }
    }
}

async fn publish_with_traceparent(s: &Sidecar, redis: &Redis) {
    let mut d = Driver::start().await;
    d.connect("c", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let mut e = envelope("chat_message", "r", chat_payload("r", 1));
    e["metadata"] = json!({"traceparent": format!("00-{TRACE_ID}-{PARENT_SPAN}-01"), "source_instance": "backend-1"});
    redis.xadd_flat("events:chat", &e);
    d.message("c", "ReceiveMessage", WAIT).await.expect("delivered");
}

fn otel_env(port: u16, protocol: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
        ("OTEL_SERVICE_NAME", "sidecar-under-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

async fn check(protocol: &str, port: u16, mut rx: mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let redis = Redis::start().await;
    let mut env = otel_env(port, protocol);
    env.push(("SIDECAR_REDIS_URL", redis.url()));
    let s = Sidecar::start(&env).await;
    publish_with_traceparent(&s, &redis).await;
    let (span, service) = event_span(&mut rx).await;
    assert_eq!(service, ["sidecar-under-test"], "{protocol}");
    assert_eq!(hex(&span.trace_id), TRACE_ID, "{protocol}: the publisher's trace continues");
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN, "{protocol}: parented to the publisher's span");
    assert_eq!(attr(&span, "connections"), Some(AnyValue::IntValue(1)), "{protocol}: {span:?}");
    assert_eq!(attr(&span, "event_type"), Some(AnyValue::StringValue("chat_message".into())));
    assert_eq!(attr(&span, "room_id"), Some(AnyValue::StringValue("r".into())));
    assert_eq!(attr(&span, "messaging.destination.name"), Some(AnyValue::StringValue("events:chat".into())));
    assert!(matches!(attr(&span, "bytes"), Some(AnyValue::IntValue(n)) if n > 100), "{span:?}");
    assert!(matches!(attr(&span, "messaging.message.id"), Some(AnyValue::StringValue(id)) if id.contains('-')));
    assert!(matches!(attr(&span, "queue_wait_ms"), Some(AnyValue::DoubleValue(_))), "{span:?}");
}

#[tokio::test]
async fn the_event_span_reaches_an_otlp_grpc_receiver_under_the_publishers_trace() {
    let (port, rx) = grpc_receiver().await;
    check("grpc", port, rx).await;
}

#[tokio::test]
async fn the_event_span_reaches_an_otlp_http_receiver_under_the_publishers_trace() {
    let (port, rx) = http_receiver().await;
    check("http/protobuf", port, rx).await;
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_nothing_fails() {
    let (port, mut rx) = http_receiver().await;
    let redis = Redis::start().await;
    // The receiver listens, but no OTEL endpoint names it.
    let s = Sidecar::start(&[("SIDECAR_REDIS_URL", redis.url()), ("OTEL_BSP_SCHEDULE_DELAY", "100".into())]).await;
    publish_with_traceparent(&s, &redis).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(rx.try_recv().is_err(), "nothing exported to port {port}");
}

#[tokio::test]
async fn json_logs_carry_the_trace_id_inside_an_event_span() {
    let (port, _rx) = grpc_receiver().await;
    let redis = Redis::start().await;
    let log = std::env::temp_dir().join(format!("sidecar-json-{}.log", free_port()));
    let mut env = otel_env(port, "grpc");
    env.extend([
        ("SIDECAR_REDIS_URL", redis.url()),
        ("SIDECAR_LOG_FORMAT", "json".to_string()),
        ("SIDECAR_LOG", "signalr_sidecar=debug".to_string()),
    ]);
    let s = Sidecar::start_logged(&env, &log).await;
    // Someone listens in the room: an entry nobody here listens to is
    // skipped before its metadata (and trace context) is decoded.
    let mut d = Driver::start().await;
    d.connect("c", &s.hub("/hubs/chat"), &["ReceiveMessage"], json!({})).await.expect("connects");
    d.invoke("c", "JoinRoom", json!(["r"])).await.expect("joins");
    let mut e = envelope("chat_message", "r", chat_payload("r", 1));
    e["metadata"] = json!({"traceparent": format!("00-{TRACE_ID}-{PARENT_SPAN}-01")});
    redis.xadd_flat("events:chat", &e);
    redis.xadd_flat("events:chat", &e); // the duplicate logs inside its event span
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("duplicate event dropped")) {
            break l.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no duplicate log line in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["span"]["trace_id"], TRACE_ID, "{line}");
    assert_eq!(v["level"], "DEBUG", "{line}");
    drop(s);
    let _ = std::fs::remove_file(log);
}
