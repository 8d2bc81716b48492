//! The operator's control interface to a running node: a Unix socket at
//! `<data dir>/control.sock`, mode 0600 inside the 0700 data directory, so
//! only the local operator can reach it. Remote peers never can: they only
//! speak the network protocols, within the node's policy.
//!
//! Protocol: the client writes one JSON [`ControlRequest`] line (at most
//! 64 KiB, within 10 s of connecting); the node answers with JSON
//! [`ControlReply`] lines, any number of `Progress` lines and then exactly
//! one final reply, and closes. A request that is late, too long, not UTF-8
//! or not a request gets an `Error` reply saying so; at most 64
//! connections are served at once, and one beyond them gets an `Error` at
//! once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Node, Status};

const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
pub const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The socket of the node whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// What the operator asks a node to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControlRequest {
    Find {
        name: String,
    },
    Pull {
        target: String,
    },
    Call {
        service: String,
        call: String,
        remote: bool,
    },
    Share {
        path: PathBuf,
    },
    Status,
    /// How the providers of a service stand with this node.
    Reputation {
        service: String,
    },
}

/// A provider in a `Find` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoundInfo {
    pub peer: String,
    pub name: String,
    pub version: String,
    pub content_id: String,
    pub publisher: String,
    pub trusted: bool,
    pub size: u64,
}

/// The node's answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControlReply {
    Progress {
        stage: String,
        bytes: u64,
        total: u64,
        provider: Option<String>,
    },
    Found(Vec<FoundInfo>),
    Pulled {
        name: String,
        content_id: String,
        bytes: u64,
        discovery_ms: u64,
        download_ms: u64,
        deploy_ms: u64,
        sources: Vec<String>,
        /// Each source and how it is connected (`PEER direct|relayed ADDRESS`).
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default)]
        first_byte_ms: Option<u64>,
        downloaded: bool,
    },
    Called {
        value: String,
        peer: Option<String>,
        micros: u64,
    },
    Shared {
        content_id: String,
    },
    Status(Box<Status>),
    Reputation(super::ServiceStanding),
    Error(String),
}

/// Serves the control socket until the node stops. Replaces a stale socket
/// left by a node that crashed; refuses to start beside a live one.
pub async fn serve(node: Node, data_dir: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another node is running with data directory {}",
                    data_dir.display()
                ),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let serving = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            let Ok(permit) = serving.clone().try_acquire_owned() else {
                let busy = ControlReply::Error(format!(
                    "the node is serving {MAX_CONNECTIONS} control connections already"
                ));
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_WITHIN, send(&mut stream, &busy)).await;
                });
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = handle(node, stream).await {
                    tracing::debug!(error = %e, "control connection failed");
                }
            });
        }
    }))
}

async fn send(
    stream: &mut (impl AsyncWriteExt + Unpin),
    reply: &ControlReply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

/// The request a client sent, or what was wrong with it.
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Result<ControlRequest, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let reading = reader.read_until(b'\n', &mut line);
    match tokio::time::timeout(REQUEST_WITHIN, reading).await {
        Err(_) => return Err(format!("no request within {} s", REQUEST_WITHIN.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.last() != Some(&b'\n') && line.len() as u64 == MAX_REQUEST {
        return Err(format!("a request longer than {} KiB", MAX_REQUEST / 1024));
    }
    let line =
        std::str::from_utf8(&line).map_err(|e| format!("a request that is not UTF-8: {e}"))?;
    serde_json::from_str(line).map_err(|e| format!("bad control request: {e}"))
}

async fn handle(node: Node, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let request = match read_request(read).await {
        Ok(request) => request,
        Err(reason) => return send(&mut write, &ControlReply::Error(reason)).await,
    };
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::channel(16);
    let work = execute(&node, request, move |reply| {
        // Progress is advisory: drop a line rather than block the work.
        let _ = progress_tx.try_send(reply);
    });
    let mut work = std::pin::pin!(work);
    let reply = loop {
        tokio::select! {
            reply = &mut work => break reply,
            Some(progress) = progress_rx.recv() => send(&mut write, &progress).await?,
        }
    };
    send(&mut write, &reply).await
}

/// Carries out one control request on `node`; `progress` receives
/// `Progress` replies while a pull runs. Used by the socket server and by
/// commands that run a short-lived node of their own.
pub async fn execute(
    node: &Node,
    request: ControlRequest,
    mut progress: impl FnMut(ControlReply) + Send,
) -> ControlReply {
    match request {
        ControlRequest::Find { name } => {
            let lookup = node.lookup_all(&name).await;
            let trusted = lookup.found.iter().map(|f| FoundInfo {
                peer: f.peer.to_string(),
                name: f.advert.manifest().name.clone(),
                version: f.advert.manifest().version.to_string(),
                content_id: f.advert.content_id().to_string(),
                publisher: f.advert.publisher().to_string(),
                trusted: true,
                size: f.advert.component_len(),
            });
            // Not read beyond the publisher key: no version, id or size.
            let untrusted = lookup.untrusted.iter().map(|u| FoundInfo {
                peer: u.peer.to_string(),
                name: name.clone(),
                version: "?".into(),
                content_id: String::new(),
                publisher: u.publisher.to_string(),
                trusted: false,
                size: 0,
            });
            ControlReply::Found(trusted.chain(untrusted).collect())
        }
        ControlRequest::Pull { target } => {
            let (future, mut watch) = node.pull_with_progress(&target);
            let mut future = std::pin::pin!(future);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let result = loop {
                tokio::select! {
                    result = &mut future => break result,
                    _ = tick.tick() => {
                        let p = watch.borrow_and_update().clone();
                        progress(ControlReply::Progress {
                            stage: format!("{:?}", p.stage),
                            bytes: p.bytes,
                            total: p.total,
                            provider: p.provider.map(|p| p.to_string()),
                        });
                    }
                }
            };
            match result {
                Ok(p) => ControlReply::Pulled {
                    name: p.name,
                    content_id: p.content_id.to_string(),
                    bytes: p.bytes,
                    discovery_ms: p.discovery.as_millis() as u64,
                    download_ms: p.download.as_millis() as u64,
                    deploy_ms: p.deploy.as_millis() as u64,
                    sources: p.sources.iter().map(|s| s.to_string()).collect(),
                    paths: p.paths,
                    first_byte_ms: p.first_byte.map(|d| d.as_millis() as u64),
                    downloaded: p.downloaded,
                },
                Err(e) => ControlReply::Error(e.to_string()),
            }
        }
        ControlRequest::Call {
            service,
            call,
            remote,
        } => {
            if remote {
                match node.invoke_remote(&service, &call).await {
                    Ok(outcome) => ControlReply::Called {
                        value: outcome.value,
                        peer: Some(outcome.peer.to_string()),
                        micros: outcome.round_trip.as_micros() as u64,
                    },
                    Err(e) => ControlReply::Error(e.to_string()),
                }
            } else {
                match node.invoke_local(&service, &call).await {
                    Ok(outcome) => ControlReply::Called {
                        value: outcome.value,
                        peer: None,
                        micros: outcome.elapsed.as_micros() as u64,
                    },
                    Err(e) => ControlReply::Error(e.to_string()),
                }
            }
        }
        ControlRequest::Share { path } => match crate::package::Package::read_file(&path) {
            Ok(package) => match node.share(package).await {
                Ok(id) => ControlReply::Shared {
                    content_id: id.to_string(),
                },
                Err(e) => ControlReply::Error(e.to_string()),
            },
            Err(e) => ControlReply::Error(format!("{}: {e}", path.display())),
        },
        ControlRequest::Status => ControlReply::Status(Box::new(node.status().await)),
        ControlRequest::Reputation { service } => {
            if crate::package::is_service_name(&service) {
                ControlReply::Reputation(node.reputation(&service))
            } else {
                ControlReply::Error(format!("{service:?} is not a service name"))
            }
        }
    }
}

/// Sends one request to the node at `data_dir` and returns its final reply;
/// `on_progress` sees every progress line.
pub async fn request(
    data_dir: &Path,
    request: &ControlRequest,
    mut on_progress: impl FnMut(&ControlReply),
) -> std::io::Result<ControlReply> {
    let path = socket_path(data_dir);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "no node is running with data directory {} ({e}); start one with `sp2a node` or pass --bootstrap",
                data_dir.display()
            ),
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply: ControlReply = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        match reply {
            ControlReply::Progress { .. } => on_progress(&reply),
            other => return Ok(other),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the node closed the control connection without an answer",
    ))
}
