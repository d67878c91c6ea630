//! The `signalr-sidecar` binary: load settings (exit 64 when they are
//! invalid), start logging, run the app until SIGTERM or SIGINT.

use std::process::ExitCode;

use signalr_sidecar::app;
use signalr_sidecar::config::{Config, RouteTable};

fn main() -> ExitCode {
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("signalr-sidecar: invalid settings:");
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(64);
        }
    };
    // The routing file is a setting too: a bad one is reported like the
    // others (its file, line and reason) and stops the start with 64.
    let routes = match RouteTable::load(&config.routes_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("signalr-sidecar: invalid settings:");
            eprintln!("  SIDECAR_ROUTES: {e}");
            return ExitCode::from(64);
        }
    };
    // Unset, the streams read are those the routes name.
    config.fit_streams(&routes);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("signalr-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The gRPC trace exporter spawns on the runtime, so telemetry starts inside it.
    let telemetry = {
        let _inside = runtime.enter();
        match signalr_sidecar::telemetry::init(&config.telemetry) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("signalr-sidecar: {e}");
                return ExitCode::from(64);
            }
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(traces = telemetry.exporting(), "telemetry started");
    let code = match runtime.block_on(app::run(config, routes, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<app::InvalidSetting>() {
            Some(bad) => {
                tracing::error!(error = %bad, "invalid settings");
                eprintln!("signalr-sidecar: invalid settings:");
                eprintln!("  {bad}");
                ExitCode::from(64)
            }
            None => {
                tracing::error!(error = %format!("{e:#}"), "signalr-sidecar stopped");
                eprintln!("signalr-sidecar: {e:#}");
                ExitCode::FAILURE
            }
        },
    };
    {
        let _inside = runtime.enter();
        telemetry.shutdown();
    }
    code
}

/// Resolves on the first SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the sidecar");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
