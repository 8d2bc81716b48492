//! Where a guest's granted connections may go (HTTP requests and socket
//! grants alike), and sending an HTTP request there.
//!
//! A grant names a host. A grant that names an IP address (or `localhost`,
//! which means this host by definition) reaches that address, whatever it
//! is: the operator wrote it. A grant that names a host name reaches only
//! the internet: the name is resolved here, once per request, addresses on
//! this host or a private network ([`crate::ip::Reach`]) are dropped, and
//! the request connects to one of the addresses that were checked, never
//! to a fresh resolution of the name (a name rebound with a zero TTL gets
//! no second look). A name that resolves only to such addresses is
//! refused; to reach a service on a private network, grant its address.
//! Socket grants (`<net host=…>`) are resolved the same way, once, when the
//! service is activated.
//!
//! The connection is this module's own: TCP to the checked address, TLS
//! for `https` with the URL's host as the server name (verified against the
//! web PKI roots), then HTTP/1.1; the connect, first-byte and between-bytes
//! timeouts are the ones the gate gives.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::ip::Reach;
use crate::package::url::{Scheme, Target};

/// How long resolving and connecting may take when the guest sets no limit.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a request to `host` may connect, or why it may connect nowhere:
/// an IP address or `localhost` as written, a host name as the system's
/// resolver answers within `timeout`, checked by [`checked`].
pub(crate) async fn destinations(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Unroutable> {
    if let Some(addresses) = literal(host, port) {
        return Ok(addresses);
    }
    let resolved = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await
    {
        Ok(found) => found.map(|addresses| addresses.collect()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the lookup timed out",
        )),
    };
    checked(host, resolved)
}

/// The addresses `host` names by itself: an IP address, or `localhost`
/// (this host, by definition; never asked of a resolver).
pub(crate) fn literal(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    host.eq_ignore_ascii_case("localhost").then(|| {
        vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ]
    })
}

/// Why a request has nowhere to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unroutable {
    /// The name did not resolve (a network failure, not a refusal).
    Lookup(String),
    /// The name resolved only to addresses a name may not lead to.
    Prohibited(String),
}

impl Unroutable {
    pub(crate) fn reason(&self) -> &str {
        match self {
            Unroutable::Lookup(reason) | Unroutable::Prohibited(reason) => reason,
        }
    }
}

/// Of what a resolver answered for the host name `host`, the addresses on
/// the internet; an error if there are none.
pub(crate) fn checked(
    host: &str,
    resolved: std::io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, Unroutable> {
    let resolved =
        resolved.map_err(|e| Unroutable::Lookup(format!("{host} does not resolve: {e}")))?;
    let (global, other): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|a| crate::ip::reach(a.ip()) == Reach::Global);
    match (global.is_empty(), other.is_empty()) {
        (false, _) => Ok(global),
        (true, true) => Err(Unroutable::Lookup(format!("{host} resolves to no address"))),
        (true, false) => Err(Unroutable::Prohibited(format!(
            "{host} resolves only to addresses off the internet ({}); a grant reaches \
             those only when it names the address itself",
            other
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Where a guest's request goes: the checked target, and the addresses it
/// may connect to (tried in order).
pub(crate) struct Route {
    pub target: Target,
    pub addresses: Vec<SocketAddr>,
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Sends `request` along `route`.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    route: Route,
    options: RequestOptions,
) -> Result<Sent, Error> {
    let connect_within = options.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_within = options.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let gap = options
        .between_bytes_timeout
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(Duration::from_nanos(1));
    let connecting = async {
        let tcp = connect(&route.addresses).await?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Stream> = match route.target.scheme {
            Scheme::Http => Box::new(tcp),
            Scheme::Https => {
                let name = server_name(&route.target.host)?;
                let tls = tokio_rustls::TlsConnector::from(tls_config())
                    .connect(name, tcp)
                    .await
                    .map_err(Error::Tls)?;
                Box::new(tls)
            }
        };
        hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(Error::from)
    };
    let (mut sender, connection) = tokio::time::timeout(connect_within, connecting)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries the path only; the `Host` header (which the
    // gate checked) names the host.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection does the I/O while the answer is awaited; it goes on
    // (with the body) in the future returned beside the response.
    let mut connection = Box::pin(connection);
    let mut answer = Box::pin(tokio::time::timeout(
        first_byte_within,
        sender.send_request(request),
    ));
    let mut connection_ended = false;
    let response = loop {
        tokio::select! {
            answered = &mut answer => {
                break answered
                    .map_err(|_| Error::ConnectionReadTimeout)?
                    .map_err(Error::from)?;
            }
            ended = &mut connection, if !connection_ended => {
                connection_ended = true;
                ended.map_err(Error::from)?;
            }
        }
    };
    let io = async move {
        if !connection_ended {
            connection.await.map_err(|e| match e.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            })?;
        }
        Ok(())
    };
    let response = response.map(|incoming| {
        Paced {
            incoming,
            gap,
            timer: Box::pin(tokio::time::sleep(gap)),
        }
        .boxed_unsync()
    });
    Ok((response, Box::new(io)))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// The first of `addresses` that accepts a connection.
async fn connect(addresses: &[SocketAddr]) -> Result<tokio::net::TcpStream, Error> {
    let mut last = None;
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        Some(e) => Error::Connect(e),
        None => Error::DestinationNotFound,
    })
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    use rustls::pki_types::ServerName;
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => Ok(ServerName::try_from(host.to_owned())?),
    }
}

/// TLS with ring and the web PKI roots, made once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A response body that fails when `gap` passes without a frame.
struct Paced {
    incoming: hyper::body::Incoming,
    gap: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.gap;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(match e.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_granted_name_reaches_only_the_internet_and_literals_reach_what_they_name() {
        assert_eq!(literal("127.0.0.1", 80), Some(vec![at("127.0.0.1:80")]));
        assert_eq!(literal("10.0.0.7", 81), Some(vec![at("10.0.0.7:81")]));
        assert_eq!(literal("::1", 82), Some(vec![at("[::1]:82")]));
        assert_eq!(
            literal("LocalHost", 83),
            Some(vec![at("127.0.0.1:83"), at("[::1]:83")])
        );
        // Spellings of an IPv4 address that a resolver would take are names.
        assert_eq!(literal("2130706433", 80), None);
        assert_eq!(literal("0x7f.1", 80), None);
        assert_eq!(literal("vm", 80), None);
        // A name pointed at this host, its network or the cloud's metadata
        // service is refused, whatever else it says.
        for inside in [
            "127.0.0.1:80",
            "10.1.2.3:80",
            "169.254.169.254:80",
            "[::1]:80",
            "[fd00::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            let refused = checked("vm", Ok(vec![at(inside)])).unwrap_err();
            assert!(
                matches!(&refused, Unroutable::Prohibited(r) if r.contains("off the internet")),
                "{inside}: {refused:?}"
            );
        }
        // Of a mixed answer only the global addresses are used.
        let mixed = checked(
            "api.example.org",
            Ok(vec![
                at("127.0.0.1:443"),
                at("93.184.216.34:443"),
                at("10.0.0.1:443"),
            ]),
        );
        assert_eq!(mixed, Ok(vec![at("93.184.216.34:443")]));
        assert!(matches!(
            checked("nowhere.example", Ok(Vec::new())),
            Err(Unroutable::Lookup(_))
        ));
        let broken = checked("broken.example", Err(std::io::Error::other("no such host")));
        assert!(broken.unwrap_err().reason().contains("does not resolve"));
    }
}
