//! What the node's read-only HTTP endpoints (`--metrics`, `--dashboard`)
//! check on every request before answering it.
//!
//! On a loopback address anyone on this host may read them, but a web page
//! from elsewhere could point a host name of its own at 127.0.0.1 (DNS
//! rebinding) and read the answers through a local browser: its requests
//! then carry that name in `Host`. So a loopback endpoint answers only
//! requests naming its own address or `localhost` with its port, and
//! refuses the rest with `421 Misdirected Request`.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The `Host` values a loopback endpoint answers.
#[derive(Clone, Debug)]
pub struct LoopbackHosts {
    hosts: Vec<String>,
}

impl LoopbackHosts {
    /// For an endpoint bound to `bound`: `None` beyond loopback, where the
    /// host names it is reached by are not known here.
    pub fn of(bound: SocketAddr) -> Option<Self> {
        bound.ip().is_loopback().then(|| Self {
            hosts: vec![bound.to_string(), format!("localhost:{}", bound.port())],
        })
    }

    /// Whether a request with this `Host` header (if any) may be answered.
    pub fn admits(&self, host: Option<&str>) -> bool {
        host.is_some_and(|host| self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
    }

    /// The answer to a request that names another host, if it does.
    pub fn refusal(&self, request: &Request) -> Option<Response> {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        (!self.admits(host))
            .then(|| (StatusCode::MISDIRECTED_REQUEST, "unknown host\n").into_response())
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`) refusing requests
/// that name another host.
pub async fn guard(State(hosts): State<LoopbackHosts>, request: Request, next: Next) -> Response {
    match hosts.refusal(&request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_naming_this_loopback_address_are_admitted() {
        let hosts = LoopbackHosts::of("127.0.0.1:9464".parse().unwrap()).unwrap();
        for ok in ["127.0.0.1:9464", "localhost:9464", "LOCALHOST:9464"] {
            assert!(hosts.admits(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("evil.example:9464"),
            Some("127.0.0.1"),
            Some("localhost:9465"),
            Some("127.0.0.1:9464.evil.example"),
        ] {
            assert!(!hosts.admits(bad), "{bad:?}");
        }
        let v6 = LoopbackHosts::of("[::1]:80".parse().unwrap()).unwrap();
        assert!(v6.admits(Some("[::1]:80")));
        assert!(LoopbackHosts::of("0.0.0.0:9464".parse().unwrap()).is_none());
        assert!(LoopbackHosts::of("192.168.1.7:9464".parse().unwrap()).is_none());
    }
}
