//! `sp2a node --dashboard ADDR`: a read-only web page of the node, served by
//! the node itself. It shows what `sp2a status` shows (peers, services with
//! their roles, providers and load, transfers with their sources,
//! announcements), the node's recent events (shares, pulls, bans,
//! replication's and reputation's decisions) and each service's audit
//! (capabilities granted, imports and how each is provided).
//!
//! The page is three embedded files (`dashboard/`), no build step; it polls
//! `/api/state` every second. Served only where the operator says: on a
//! loopback address anyone on this host may read it; elsewhere every
//! request needs the token printed with the address (`?token=` or
//! `Authorization: Bearer`); the page it is opened with names its style and
//! script with the token too, so they load. On loopback, requests naming
//! another host in `Host` are refused (a web page cannot rebind its name to
//! the dashboard; elsewhere the token stops it, see [`crate::http_guard`]).
//! The page may run only its own script and may not be framed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sp2a::node::{Node, NodeEvent};
use sp2a::sandbox::audit::{Audit, ImportClass};

use crate::http_guard::LoopbackHosts;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Events the page shows, newest last.
const RECENT_EVENTS: usize = 200;
/// How often the providers of each service are looked up (a DHT query per
/// service).
const PROVIDERS_EVERY: Duration = Duration::from_secs(10);

/// One event as the page shows it.
#[derive(Clone, Debug, Serialize)]
struct EventRecord {
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
    kind: &'static str,
    text: String,
}

/// A service's audit as the page shows it.
#[derive(Clone, Debug, Serialize)]
struct ServiceAudit {
    name: String,
    version: String,
    content_id: String,
    publisher: String,
    /// The capabilities its manifest declares (granted, since it runs).
    capabilities: Vec<String>,
    /// `(import, how it is provided)`.
    imports: Vec<(String, String)>,
    exports: Vec<String>,
}

#[derive(Serialize)]
struct PageState {
    status: sp2a::node::Status,
    events: Vec<EventRecord>,
    audits: Vec<ServiceAudit>,
    /// Providers each service had at the last lookup (this node included).
    providers: HashMap<String, usize>,
}

struct Shared {
    node: Node,
    events: Mutex<VecDeque<EventRecord>>,
    /// Audits by content id: a running service's never changes.
    audits: Mutex<HashMap<String, ServiceAudit>>,
    /// Providers per service name, from the last lookups.
    providers: Mutex<HashMap<String, usize>>,
    /// What every request must carry: the token beyond loopback, the
    /// right `Host` on loopback.
    access: Access,
    /// The page, naming its style and script with the token if one is
    /// needed.
    index: String,
}

enum Access {
    Token(String),
    Loopback(LoopbackHosts),
}

/// Binds `address` and serves until the returned task is aborted. Returns
/// the bound address and the token requests must carry (none on loopback).
pub async fn serve(
    node: Node,
    address: SocketAddr,
) -> anyhow::Result<(SocketAddr, Option<String>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--dashboard: cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let (access, token) = match LoopbackHosts::of(bound) {
        Some(hosts) => (Access::Loopback(hosts), None),
        None => {
            let token = match std::env::var("SP2A_DASHBOARD_TOKEN") {
                Ok(token) => check_token(&token)
                    .context("SP2A_DASHBOARD_TOKEN")?
                    .to_owned(),
                Err(_) => hex::encode(rand::random::<[u8; 16]>()),
            };
            (Access::Token(token.clone()), Some(token))
        }
    };
    let index = match &token {
        Some(token) => INDEX
            .replace("\"app.css\"", &format!("\"app.css?token={token}\""))
            .replace("\"app.js\"", &format!("\"app.js?token={token}\"")),
        None => INDEX.to_owned(),
    };
    let shared = Arc::new(Shared {
        node: node.clone(),
        events: Mutex::new(VecDeque::new()),
        audits: Mutex::new(HashMap::new()),
        providers: Mutex::new(HashMap::new()),
        access,
        index,
    });
    let mut events = node.events();
    let recorder = shared.clone();
    let recording = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => recorder.record(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    recorder.push("missed", format!("{missed} events were missed"))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let looker = shared.clone();
    let looking = tokio::spawn(async move {
        let mut every = tokio::time::interval(PROVIDERS_EVERY);
        loop {
            every.tick().await;
            looker.look_up_providers().await;
        }
    });
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|State(shared): State<Arc<Shared>>| async move {
                page(shared.index.clone(), "text/html")
            }),
        )
        .route(
            "/app.js",
            axum::routing::get(|| async { page(SCRIPT, "text/javascript") }),
        )
        .route(
            "/app.css",
            axum::routing::get(|| async { page(STYLE, "text/css") }),
        )
        .route("/api/state", axum::routing::get(state))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not here\n").into_response() })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app).await;
        recording.abort();
        looking.abort();
        if let Err(e) = served {
            tracing::warn!(error = %e, "the dashboard server stopped");
        }
    });
    Ok((bound, token, server))
}

/// A token given by the operator: long enough, and written only with
/// characters that stand for themselves in a URL and in HTML.
fn check_token(token: &str) -> anyhow::Result<&str> {
    if token.len() < 16 {
        anyhow::bail!("a dashboard token needs at least 16 characters");
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        anyhow::bail!(
            "a dashboard token is letters, digits, '-', '.', '_' and '~' only, not {c:?}"
        );
    }
    Ok(token)
}

fn page(body: impl IntoResponse, kind: &'static str) -> Response {
    let mut response = body.into_response();
    let content_type = format!("{kind}; charset=utf-8");
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).expect("a valid header value"),
    );
    response
}

/// Every request: the token where one is needed, else (loopback) the
/// right `Host`; every answer: no framing, no other scripts, no referrer,
/// no caching.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    match &shared.access {
        Access::Token(token) => {
            if !carries(request.headers(), request.uri().query(), token) {
                return (
                    StatusCode::UNAUTHORIZED,
                    "this dashboard needs the token printed with its address\n",
                )
                    .into_response();
            }
        }
        Access::Loopback(hosts) => {
            if let Some(refused) = hosts.refusal(&request) {
                return refused;
            }
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether a request carries `token`, in the query or as a bearer token
/// (compared without an early exit).
fn carries(headers: &HeaderMap, query: Option<&str>, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let in_query = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    [bearer, in_query].into_iter().flatten().any(|given| {
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.node.status().await;
    let audits = shared.audits();
    let events = shared.events.lock().unwrap().iter().cloned().collect();
    let providers = shared.providers.lock().unwrap().clone();
    axum::Json(PageState {
        status,
        events,
        audits,
        providers,
    })
    .into_response()
}

impl Shared {
    fn record(&self, event: &NodeEvent) {
        self.push(event.kind(), describe(event));
    }

    fn push(&self, kind: &'static str, text: String) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let mut events = self.events.lock().unwrap();
        if events.len() == RECENT_EVENTS {
            events.pop_front();
        }
        events.push_back(EventRecord { at_ms, kind, text });
    }

    /// Looks up the providers of every service this node runs.
    async fn look_up_providers(&self) {
        let me = self.node.peer_id();
        let mut names: Vec<String> = self
            .node
            .services()
            .iter()
            .map(|s| s.package.manifest().name.clone())
            .collect();
        names.sort();
        names.dedup();
        let mut counts = HashMap::new();
        for name in names {
            let mut peers: std::collections::HashSet<_> = self
                .node
                .find(&name)
                .await
                .into_iter()
                .map(|f| f.peer)
                .collect();
            peers.insert(me);
            counts.insert(name, peers.len());
        }
        *self.providers.lock().unwrap() = counts;
    }

    /// The audit of every service running now (each computed once).
    fn audits(&self) -> Vec<ServiceAudit> {
        let mut known = self.audits.lock().unwrap();
        let services = self.node.services();
        let mut out = Vec::with_capacity(services.len());
        for service in services {
            let id = service.package.content_id().to_string();
            let audit = known.entry(id.clone()).or_insert_with(|| {
                let manifest = service.package.manifest();
                let component = &service.activation.compiled().component;
                let audit = sp2a::sandbox::audit::audit(
                    component.engine(),
                    component,
                    &manifest.capabilities,
                );
                audit_view(
                    &manifest.name,
                    &manifest.version.to_string(),
                    id,
                    &service.package,
                    &audit,
                )
            });
            out.push(audit.clone());
        }
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        out
    }
}

fn audit_view(
    name: &str,
    version: &str,
    content_id: String,
    package: &sp2a::package::VerifiedPackage,
    audit: &Audit,
) -> ServiceAudit {
    let imports = audit
        .imports
        .iter()
        .map(|import| {
            let how = match &import.class {
                ImportClass::Linked { grants } => format!("linked: {grants}"),
                ImportClass::Capability {
                    capability,
                    declared,
                } => match declared {
                    true => format!("capability {capability}, declared"),
                    false => format!("capability {capability}, NOT declared"),
                },
                ImportClass::Host => "offered by every node".to_owned(),
                ImportClass::Unsupported { reason } => format!("not provided: {reason}"),
            };
            (import.name.clone(), how)
        })
        .collect();
    ServiceAudit {
        name: name.to_owned(),
        version: version.to_owned(),
        content_id,
        publisher: package.advert().publisher().to_string(),
        capabilities: package.manifest().capabilities.describe(),
        imports,
        exports: audit
            .exports
            .iter()
            .flat_map(|e| {
                e.functions.iter().map(move |(f, sig)| match f.is_empty() {
                    true => format!("{}: {sig}", e.name),
                    false => format!("{} {f}: {sig}", e.name),
                })
            })
            .collect(),
    }
}

/// One line for an event.
fn describe(event: &NodeEvent) -> String {
    let peers = |peers: &[sp2a::net::PeerId]| {
        peers
            .iter()
            .map(|p| short_peer(&p.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match event {
        NodeEvent::Shared {
            name,
            version,
            content_id,
        } => format!("shared {name} {version} ({})", content_id.short()),
        NodeEvent::PullStarted { target } => format!("pull of {target} started"),
        NodeEvent::Found {
            target,
            providers,
            elapsed,
        } => format!("found {providers} provider(s) of {target} in {elapsed:.2?}"),
        NodeEvent::Downloaded {
            name,
            bytes,
            from,
            elapsed,
        } => format!(
            "downloaded {name} ({bytes} bytes) from {} in {elapsed:.2?}",
            peers(from)
        ),
        NodeEvent::Pulled {
            name,
            content_id,
            elapsed,
        } => format!(
            "pulled {name} ({}) in {elapsed:.2?}; now providing it",
            content_id.short()
        ),
        NodeEvent::Prefetched { name, bytes, .. } => {
            format!("prefetched {name} ({bytes} bytes) as a standby")
        }
        NodeEvent::PeerBanned { peer, reason, .. } => {
            format!("banned {}: {reason}", short_peer(&peer.to_string()))
        }
        NodeEvent::Served {
            peer,
            content_id,
            bytes,
        } => format!(
            "served {bytes} bytes of {} to {}",
            content_id.short(),
            short_peer(&peer.to_string())
        ),
        NodeEvent::Invoked { peer, service } => {
            format!("{} called {service}", short_peer(&peer.to_string()))
        }
        NodeEvent::Diffusion {
            service,
            standbys,
            reason,
        } => format!("asked {} to provide {service}: {reason}", peers(standbys)),
        NodeEvent::Checked {
            service,
            provider,
            right,
            how,
            ..
        } => format!(
            "checked an answer of {service} from {} ({how}): {}",
            short_peer(&provider.to_string()),
            if *right { "right" } else { "WRONG" }
        ),
        NodeEvent::Regression { service, reason } => {
            format!("stopped providing {service}: {reason}")
        }
    }
}

/// A peer id's last characters, enough to tell peers apart on a page.
fn short_peer(peer: &str) -> String {
    let tail = peer.len().saturating_sub(8);
    format!("…{}", &peer[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_from_the_query_or_a_bearer_header_only_whole() {
        let token = "00112233445566778899aabbccddeeff";
        let mut headers = HeaderMap::new();
        assert!(!carries(&headers, None, token));
        assert!(carries(&headers, Some(&format!("token={token}")), token));
        assert!(carries(
            &headers,
            Some(&format!("a=1&token={token}")),
            token
        ));
        assert!(!carries(&headers, Some("token=0011"), token));
        assert!(!carries(&headers, Some(&format!("token={token}0")), token));
        assert!(!carries(&headers, Some(&format!("xtoken={token}")), token));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        assert!(carries(&headers, None, token));
    }

    #[test]
    fn an_operators_token_must_be_long_and_plain() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("A-b.c_d~0123456789").is_ok());
        for bad in [
            "short",
            "0123456789abcde\"",
            "0123456789abcdef&x=1",
            "0123456789 abcdef",
        ] {
            assert!(check_token(bad).is_err(), "{bad}");
        }
    }
}
