//! `watch --listen`: `/healthz` (the process answers), `/readyz` (the last cycle succeeded
//! within three intervals), `/metrics` (Prometheus text), `/status` and `/plan` (JSON).
//! Read-only: nothing here changes the fleet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::status::Shared;
use crate::clock::Clock;

/// Parses `--listen`: `:PORT` binds 127.0.0.1 (a bare port must not expose the fleet's state
/// to the network by accident); `HOST:PORT` binds what it says, `0.0.0.0:PORT` included.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s.to_owned(),
    };
    full.parse().map_err(|_| {
        format!("`{s}` is not an address to listen on: write `:9090` (127.0.0.1), `127.0.0.1:9090` or `0.0.0.0:9090`")
    })
}

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    clock: Clock,
    /// `/readyz` fails when the last successful cycle is older than this.
    stale_after: Duration,
}

/// Serves the endpoints on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    clock: Clock,
    interval: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = App {
        shared,
        clock,
        stale_after: interval.saturating_mul(3),
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/plan", get(plan))
        .with_state(app);
    axum::serve(listener, router).with_graceful_shutdown(stop).await
}

async fn readyz(State(app): State<App>) -> Response {
    match app.shared.status().readiness(app.clock.now(), app.stale_after) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.shared.metrics_text(),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Response {
    axum::Json(app.shared.status()).into_response()
}

async fn plan(State(app): State<App>) -> Response {
    match app.shared.plan() {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => (StatusCode::NOT_FOUND, "no plan yet\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_loopback_and_wildcards_only_when_written() {
        assert_eq!(parse_listen(":9090").unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(parse_listen("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse_listen("[::1]:9090").unwrap().to_string(), "[::1]:9090");
        assert!(parse_listen("9090").unwrap_err().contains("`:9090`"));
    }
}
