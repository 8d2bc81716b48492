//! The HTTP allow-list: a grant (a policy rule) and a request, as the
//! sandbox's gate checks them.
//!
//! Input: the grant on the first line, the request URL on the rest.
//! Oracle: a request the grant admits stays within the grant's path prefix
//! once a lenient server has normalised its path: percent-decoded again
//! and again (`%252e` is `.` to a server that decodes twice), overlong and
//! full-width dots and slashes folded, `\` read as `/`, path parameters
//! (`;…`) stripped, segments of dots and spaces resolved as `.` and `..`.
//! The gate must be at least as strict as every such server.

use sp2a::package::url::{HttpUrl, Target};

pub fn seeds() -> Vec<Vec<u8>> {
    [
        "http://127.0.0.1:*/greetings/\nhttp://127.0.0.1:8080/greetings/hi",
        "http://127.0.0.1:*/greetings/\nhttp://127.0.0.1:8080/greetings/..;/admin",
        "http://127.0.0.1:*/greetings/\nhttp://127.0.0.1:8080/greetings/%2e%2e;/admin",
        "http://127.0.0.1:*/greetings/\nhttp://127.0.0.1:8080/greetings/%252e%252e/admin",
        "http://127.0.0.1:*/greetings/\nhttp://127.0.0.1:8080/greetings/%c0%ae%c0%ae/admin",
        "https://api.example.org/v1\nhttps://api.example.org/v1/items?x=../y",
        "https://api.example.org/v1\nhttps://api.example.org/v1/a%20b/caf%C3%A9",
        "http://[::1]:*/x/\nhttp://[::1]:81/x/.well-known/y",
        "http://10.0.0.7:*/v1\nhttp://10.0.0.7:9/v1%2f..%2fadmin",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub fn run(bytes: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "not utf-8".into();
    };
    let (grant, request) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(grant) = HttpUrl::parse_rule(grant) else {
        return "bad grant".into();
    };
    let Some((scheme, rest)) = request.split_once("://") else {
        return "no scheme".into();
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let target = match Target::parse(scheme, authority, path) {
        Ok(target) => target,
        Err(e) => {
            let kind: String = e.chars().take_while(|c| *c != '"').take(24).collect();
            return format!("refused {kind}");
        }
    };
    if !grant.admits(&target) {
        return "outside".into();
    }
    let served = normalise(&target.path);
    let prefix = normalise(&grant.path);
    assert!(
        within(&served, &prefix, grant.path.ends_with('/')),
        "{:?} admitted under {:?}, but a server serves {served:?}",
        target.path,
        grant.path
    );
    "admitted".into()
}

/// What a lenient server makes of a path (see the module's oracle).
fn normalise(path: &str) -> String {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..4 {
        let decoded = percent_decode(&bytes);
        if decoded == bytes {
            break;
        }
        bytes = decoded;
    }
    let text = fold(&bytes);
    let mut segments: Vec<String> = Vec::new();
    for segment in text.split('/').skip(1) {
        let segment = segment.split(';').next().unwrap_or("");
        let trimmed = segment.trim_end_matches(['.', ' ']);
        if !segment.is_empty() && trimmed.is_empty() {
            if segment != "." {
                segments.pop();
            }
            continue;
        }
        segments.push(segment.to_owned());
    }
    format!("/{}", segments.join("/"))
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    out
}

/// Bytes as text, with what servers fold to `.` and `/` folded: overlong
/// UTF-8 of `.` and `/`, full-width and other lookalike dots and slashes,
/// and `\`.
fn fold(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (folded, used) = match rest {
            [0xc0, 0xae, ..] => (b'.', 2),
            [0xc0, 0xaf, ..] | [0xc1, 0x9c, ..] => (b'/', 2),
            [0xe0, 0x80, 0xae, ..] => (b'.', 3),
            [0xe0, 0x80, 0xaf, ..] => (b'/', 3),
            [b'\\', ..] => (b'/', 1),
            _ => (rest[0], 1),
        };
        out.push(folded);
        at += used;
    }
    String::from_utf8_lossy(&out)
        .chars()
        .map(|c| match c {
            '\u{ff0e}' | '\u{2024}' | '\u{fe52}' | '\u{3002}' => '.',
            '\u{ff0f}' | '\u{2215}' | '\u{2044}' | '\u{ff3c}' => '/',
            c => c,
        })
        .collect()
}

/// Whether `path` lies at or below `prefix` (a prefix that ended with `/`
/// before normalising covers what is below it only).
fn within(path: &str, prefix: &str, directory: bool) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some("") => !directory,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}
