//! The OTLP trace exporter, built from the standard `OTEL_*` variables
//! (endpoint, protocol, service name, sampler, resource attributes). With
//! no endpoint set nothing is exported and event spans are not even built.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace_context::RemoteParent;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported; hot paths skip building spans when not.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Builds the tracer provider when an OTLP endpoint is configured.
pub(super) fn provider_from_env() -> Result<Option<SdkTracerProvider>, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        return Ok(None);
    }
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let exporter = match protocol.as_deref().unwrap_or("grpc") {
        "grpc" => opentelemetry_otlp::SpanExporter::builder().with_tonic().with_protocol(Protocol::Grpc).build(),
        "http/protobuf" => {
            opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()
        }
        other => return Err(format!("OTEL_EXPORTER_OTLP_PROTOCOL: '{other}' must be grpc or http/protobuf")),
    }
    .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("signalr-sidecar");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// Makes `span` a child of the publisher's span.
pub fn set_remote_parent(span: &tracing::Span, parent: RemoteParent) {
    let flags = if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let context = SpanContext::new(
        TraceId::from(parent.trace_id),
        SpanId::from(parent.span_id),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(context));
}

/// The trace id the exporter gives `span` (its own, or its parent's).
pub fn trace_id_of(span: &tracing::Span) -> Option<u128> {
    let id = span.context().span().span_context().trace_id();
    (id != TraceId::INVALID).then(|| u128::from_be_bytes(id.to_bytes()))
}
