//! Logs, metrics and traces. Other modules record through the handles in
//! [`metrics::Metrics`] (label sets typed in [`labels`]), log and count a
//! notable occurrence at once through [`events`], log the rest with
//! `tracing`, and open event spans only when [`tracing_enabled`] says an
//! OTLP exporter is running.

pub mod events;
mod handles;
pub mod labels;
pub mod metrics;
mod otel;
pub mod trace_context;

pub use handles::PerValue;
pub use metrics::Metrics;
pub use otel::{enabled as tracing_enabled, set_remote_parent, trace_id_of};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryConfig;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still buffered; call once, at exit.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("signalr-sidecar: flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: plain text or JSON logs filtered by the
/// `log` setting, plus an OTLP layer when the `OTEL_*` variables ask for one.
/// Must run inside the Tokio runtime (the gRPC exporter spawns on it).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| format!("SIDECAR_LOG: {e}"))?;
    let provider = otel::provider_from_env()?;
    let (text, json) = if config.log_json {
        let layer =
            tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false);
        (None, Some(layer.with_filter(filter)))
    } else {
        (Some(tracing_subscriber::fmt::layer().with_target(true).with_filter(filter)), None)
    };
    // Spans go to the exporter whatever the log level; the sidecar's own spans only.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("signalr-sidecar"))
            .with_filter(Targets::new().with_target("signalr_sidecar", tracing::Level::INFO))
    });
    tracing_subscriber::registry().with(otel).with(text).with(json).try_init().map_err(|e| e.to_string())?;
    Ok(Telemetry { provider })
}
