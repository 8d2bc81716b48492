//! HTTP destinations: what a manifest's `<http url="…"/>` asks for, what a
//! policy's `grants.http` rules allow, and the check of each outgoing
//! request a guest makes against the URLs it was granted.
//!
//! A URL names a scheme (`http` or `https`), a host (name or IP address), a
//! port (the scheme's default unless given; a policy rule may say `*`) and a
//! path prefix (`/` unless given). No user information, query or fragment.
//! A prefix covers the paths below it segment by segment: `/v1` covers
//! `/v1` and `/v1/x`, not `/v10`. Paths that a server could normalise out
//! of their prefix are refused outright: `.` and `..` segments in any
//! encoding (overlong UTF-8 included), path parameters (`..;`), double
//! encoding (`%252e`), encoded slashes, backslashes and controls (see
//! `clean_path`). A request's path is compared as written: another
//! spelling of a granted prefix (`/gr%65etings/`) is outside it.

use std::fmt;

use super::manifest::is_host;

/// An HTTP scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme's port when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// A URL prefix: scheme, host, port (`None`: any, in policy rules only)
/// and path prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    pub scheme: Scheme,
    /// Lowercase host name, or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: Option<u16>,
    /// Starts with `/`.
    pub path: String,
}

/// Longest URL accepted.
const MAX_URL: usize = 2048;

impl HttpUrl {
    /// Parses a URL with a definite port (the scheme's default if none is
    /// written), as manifests declare them.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with(text, false)
    }

    /// Parses a policy rule: as [`HttpUrl::parse`], and the port may be `*`.
    pub fn parse_rule(text: &str) -> Result<Self, String> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, any_port: bool) -> Result<Self, String> {
        let text = text.trim();
        if text.len() > MAX_URL {
            return Err(format!("longer than {MAX_URL} bytes"));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '@' | '\\'))
        {
            return Err(format!(
                "{c:?} is not allowed (no user information, query or fragment)"
            ));
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host[:port][/path]")?;
        let scheme = Scheme::parse(scheme).ok_or("the scheme must be http or https")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let (host, port) = split_authority(authority).ok_or("bad host or port")?;
        let host = host.to_ascii_lowercase();
        if !is_host(&host) {
            return Err(format!("{host:?} is not a host name or IP address"));
        }
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") if any_port => None,
            Some(port) => Some(parse_port(port)?),
        };
        check_path(path)?;
        Ok(Self {
            scheme,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// Whether `other` lies within this URL (a policy rule covering a
    /// manifest's URL).
    pub fn covers(&self, other: &HttpUrl) -> bool {
        self.scheme == other.scheme
            && self.host == other.host
            && (self.port.is_none() || self.port == other.port)
            && within(&other.path, &self.path)
    }

    /// Whether a request to `scheme://host:port/path` lies within this URL.
    /// `path` is the request's path without its query; it must be clean
    /// (see [`Target::parse`]).
    pub fn admits(&self, target: &Target) -> bool {
        self.scheme == target.scheme
            && self.host == target.host
            && self.port.is_none_or(|p| p == target.port)
            && within(&target.path, &self.path)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match self.host.contains(':') {
            true => write!(f, "[{}]", self.host)?,
            false => f.write_str(&self.host)?,
        }
        match self.port {
            Some(port) if port == self.scheme.default_port() => {}
            Some(port) => write!(f, ":{port}")?,
            None => f.write_str(":*")?,
        }
        f.write_str(&self.path)
    }
}

/// Where one outgoing request goes, read from its URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// Reads a request's scheme, authority and path (query dropped).
    /// Refuses what a grant check could be misled by: user information in
    /// the authority, unclean paths, other schemes.
    pub fn parse(scheme: &str, authority: &str, path_and_query: &str) -> Result<Self, String> {
        let scheme = Scheme::parse(scheme).ok_or(format!("scheme {scheme:?}"))?;
        if authority.contains('@') {
            return Err("user information in the authority".into());
        }
        let (host, port) = split_authority(authority).ok_or("bad host or port")?;
        let host = host.to_ascii_lowercase();
        if !is_host(&host) {
            return Err(format!("host {host:?}"));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(port) => parse_port(port)?,
        };
        let path = match path_and_query.split_once('?') {
            Some((path, _)) => path,
            None => path_and_query,
        };
        let path = if path.is_empty() { "/" } else { path };
        check_path(path)?;
        Ok(Self {
            scheme,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = HttpUrl {
            scheme: self.scheme,
            host: self.host.clone(),
            port: Some(self.port),
            path: self.path.clone(),
        };
        url.fmt(f)
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            after => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(format!("port {port:?} is not 1-65535"))
}

fn check_path(path: &str) -> Result<(), String> {
    clean_path(path).map_err(|why| format!("path {path:?}: {why}"))
}

/// Whether an escape may decode to `byte`: a byte that changes how a
/// server splits or reads a path (`/`, `\`, `;`, `?`, `#`, `%`, controls)
/// never may, so decoding once, anywhere, leaves the segments as they are.
fn decodable(byte: u8) -> bool {
    byte >= 0x80
        || (byte.is_ascii_graphic() && !matches!(byte, b'/' | b'\\' | b';' | b'?' | b'#' | b'%'))
        || byte == b' '
}

/// Checks that `path` means the same to every server, so that a prefix
/// check on its text is a check on what the server serves: absolute;
/// printable ASCII; no `\`, no `;` (path parameters, which servers in the
/// Tomcat style strip before resolving: `..;` is `..` to them); every `%`
/// a whole escape whose byte is not structural (see [`decodable`]: no
/// encoded `%`, so no double encoding); escapes above ASCII only as
/// well-formed UTF-8 of letters and digits (no overlong `%c0%ae` dots, no
/// full-width dots or slashes that a normalising server folds); and no
/// segment, once decoded, made only of dots and spaces (`.`, `..`, and
/// `...` or `.. ` that some file systems trim to `..`).
fn clean_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("not absolute");
    }
    if let Some(c) = path.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(match c {
            b' ' => "a raw space",
            _ => "a character that is not printable ASCII",
        });
    }
    if path.contains('\\') {
        return Err("a backslash");
    }
    if path.contains(';') {
        return Err("path parameters (';')");
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment)?;
        let text = std::str::from_utf8(&decoded).map_err(|_| "escapes that are not UTF-8")?;
        if text.chars().any(|c| !c.is_ascii() && !c.is_alphanumeric()) {
            return Err("escaped non-ASCII characters other than letters and digits");
        }
        if !text.is_empty() && text.chars().all(|c| matches!(c, '.' | ' ')) {
            return Err("'.' or '..' segments (in any encoding)");
        }
    }
    Ok(())
}

/// One segment with its escapes decoded, each checked by [`decodable`].
fn percent_decode(segment: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'%' {
            out.push(bytes[at]);
            at += 1;
            continue;
        }
        let byte = bytes
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .ok_or("a '%' that is not followed by two hex digits")?;
        if !decodable(byte) {
            return Err(match byte {
                b'%' => "an encoded '%' (double encoding)",
                b'/' | b'\\' => "encoded slashes or backslashes",
                _ => "an encoded separator or control character",
            });
        }
        out.push(byte);
        at += 3;
    }
    Ok(out)
}

/// Whether `path` lies at or below `prefix`, by whole segments.
fn within(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap()
    }

    fn target(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        Target::parse(scheme, authority, path)
    }

    #[test]
    fn urls_parse_with_default_ports_and_paths() {
        let u = url("HTTPS://API.Example.org");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Https, "api.example.org", Some(443), "/")
        );
        assert_eq!(u.to_string(), "https://api.example.org/");
        let u = url("http://127.0.0.1:8080/v1/");
        assert_eq!((u.port, u.path.as_str()), (Some(8080), "/v1/"));
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/v1/");
        let u = url("http://[::1]:81/x");
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(81)));
        assert_eq!(u.to_string(), "http://[::1]:81/x");
        assert_eq!(
            HttpUrl::parse_rule("http://localhost:*").unwrap().port,
            None
        );
    }

    #[test]
    fn hostile_urls_are_refused() {
        for bad in [
            "ftp://example.org/",
            "example.org",
            "http://user@example.org/",
            "http://example.org/?q=1",
            "http://example.org/#top",
            "http://example.org:0/",
            "http://example.org:99999/",
            "http://example.org:*/",
            "http://exa mple.org/",
            "http://-bad.org/",
            "http://example.org/a/../b",
            "http://example.org/a/%2e%2E/b",
            "http://example.org/a%2fb",
            "http://example.org/a\\b",
            "http://[::1/",
            "http://::1/",
            "http://",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpUrl::parse_rule("http://example.org:*/").is_ok());
    }

    #[test]
    fn a_rule_covers_urls_by_scheme_host_port_and_whole_segments() {
        let rule = HttpUrl::parse_rule("http://127.0.0.1:*/api").unwrap();
        assert!(rule.covers(&url("http://127.0.0.1:9000/api")));
        assert!(rule.covers(&url("http://127.0.0.1/api/v2/")));
        assert!(!rule.covers(&url("http://127.0.0.1/apix")));
        assert!(!rule.covers(&url("http://127.0.0.1/")));
        assert!(!rule.covers(&url("https://127.0.0.1/api")));
        assert!(!rule.covers(&url("http://127.0.0.2/api")));
        let exact = url("https://api.example.org/v1/");
        assert!(!exact.covers(&url("https://api.example.org:8443/v1/")));
        assert!(exact.covers(&url("https://api.example.org/v1/x")));
        assert!(!exact.covers(&url("https://api.example.org/v1")));
    }

    #[test]
    fn requests_are_admitted_only_within_a_grant() {
        let grant = url("http://127.0.0.1:8080/v1");
        let ok = |u: &str| grant.admits(&target(u).unwrap());
        assert!(ok("http://127.0.0.1:8080/v1"));
        assert!(ok("http://127.0.0.1:8080/v1/items?x=../y"));
        assert!(!ok("http://127.0.0.1:8080/v10"));
        assert!(!ok("http://127.0.0.1:8081/v1"));
        assert!(!ok("http://127.0.0.1/v1"));
        assert!(!ok("https://127.0.0.1:8080/v1"));
        assert!(!ok("http://localhost:8080/v1"));
        // What a server could resolve outside the prefix never gets checked.
        for bad in [
            "http://127.0.0.1:8080/v1/../admin",
            "http://127.0.0.1:8080/v1/%2E%2e/admin",
            "http://127.0.0.1:8080/v1/.%2e/admin",
            "http://127.0.0.1:8080/v1%2f..%2fadmin",
            "http://127.0.0.1:8080/v1\\..\\admin",
            // What a live review got through: path parameters, double
            // encoding, overlong UTF-8.
            "http://127.0.0.1:8080/v1/..;/admin",
            "http://127.0.0.1:8080/v1/%2e%2e;/admin",
            "http://127.0.0.1:8080/v1/%252e%252e/admin",
            "http://127.0.0.1:8080/v1/%c0%ae%c0%ae/admin",
            // And their neighbours.
            "http://127.0.0.1:8080/v1/x;y",
            "http://127.0.0.1:8080/v1/..%3b/admin",
            "http://127.0.0.1:8080/v1/%25/admin",
            "http://127.0.0.1:8080/v1/%e0%80%ae%e0%80%ae/admin",
            "http://127.0.0.1:8080/v1/%ef%bc%8e%ef%bc%8e/admin",
            "http://127.0.0.1:8080/v1/%ef%bc%8fadmin",
            "http://127.0.0.1:8080/v1/.../admin",
            "http://127.0.0.1:8080/v1/..%20/admin",
            "http://127.0.0.1:8080/v1/%00/admin",
            "http://127.0.0.1:8080/v1/%0a",
            "http://127.0.0.1:8080/v1/%2",
            "http://127.0.0.1:8080/v1/%zz",
            "http://127.0.0.1:8080/v1/%5c..",
            "http://127.0.0.1:8080/v1/%3f/../admin",
            "http://x@127.0.0.1:8080/v1",
            "http://127.0.0.1:8080@evil.org/v1",
            "gopher://127.0.0.1:8080/v1",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
        assert_eq!(
            target("http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080/"
        );
        // Ordinary escapes stay usable.
        for fine in [
            "http://127.0.0.1:8080/v1/a%20b",
            "http://127.0.0.1:8080/v1/a.b/.well-known",
            "http://127.0.0.1:8080/v1/caf%C3%A9",
            "http://127.0.0.1:8080/v1/%7Euser",
        ] {
            assert!(ok(fine), "{fine}");
        }
        // Another spelling of the prefix is outside it.
        assert!(!ok("http://127.0.0.1:8080/%76%31/x"));
    }
}
