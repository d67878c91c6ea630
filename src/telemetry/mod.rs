//! Logs, metrics and (later) traces. Other modules record through the
//! handles in [`metrics::Metrics`] and log with `tracing`.

pub mod metrics;

pub use metrics::Metrics;

use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

/// Installs the global log subscriber: plain text or JSON, filtered by the
/// `log` setting (or `RUST_LOG`). Returns an error if one is installed already.
pub fn init(config: &TelemetryConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| format!("SIDECAR_LOG: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let result = if config.log_json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| e.to_string())
}
