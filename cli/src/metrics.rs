//! `sp2a node --metrics ADDR`: the node's Prometheus metrics over HTTP, at
//! `/metrics` only, read-only (nothing of the control socket's powers). On
//! a loopback address only requests naming that address or `localhost`
//! are answered (see [`crate::http_guard`]).

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use sp2a::node::Node;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `address` and serves until the task is aborted. Returns the bound
/// address (the real port when `address` asked for port 0).
pub async fn serve(
    node: Node,
    address: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--metrics: cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "metrics served beyond this host: anyone who can reach it sees them");
    }
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let node = node.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, OPENMETRICS)],
                        node.metrics_text().await,
                    )
                }
            }),
        )
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "only /metrics is served here\n").into_response()
        });
    let app = match crate::http_guard::LoopbackHosts::of(bound) {
        Some(hosts) => app.layer(axum::middleware::from_fn_with_state(
            hosts,
            crate::http_guard::guard,
        )),
        None => app,
    };
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok((bound, server))
}
