//! `sp2a node`: run a node until Ctrl-C; and the node configuration file
//! shared by the commands that start a node of their own.
//!
//! ```toml
//! data-dir = "node-data"            # identity, store, cache, control socket
//! policy = "policy.toml"            # the node policy (default: deny all)
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! bootstrap = ["/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW..."]
//! share = ["hello.rps"]
//! mdns = false
//! max-invocations-per-service = 8   # the paper's limit L
//! max-concurrent-uploads = 32
//! max-connections = 512
//! upload-rate = "512 KiB"           # per second; default unlimited
//! share-partial = true              # serve verified blocks while downloading
//! compile-cache = "/var/cache/sp2a" # share compiled artifacts with this host's
//!                                   # other nodes (default: <data-dir>/cache)
//!
//! [pull]
//! strategy = "swarm"                # or "sequential" (the paper's approach)
//! parallel = 8                      # requests in flight (swarm)
//! timeout = "2m"                    # give up after
//! attempt-timeout = "5s"            # first attempt; doubles per retry
//! blocks-per-request = 4            # 16 KiB blocks
//!
//! [allow]                           # services open only to these peers
//! notes = ["12D3KooW..."]
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Deserialize;
use sp2a::net::{Multiaddr, PeerId};
use sp2a::node::{Node, NodeConfig, NodeEvent};
use sp2a::package::units::{parse_duration, parse_size};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NodeFile {
    data_dir: Option<PathBuf>,
    policy: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    share: Vec<PathBuf>,
    #[serde(default)]
    mdns: bool,
    max_invocations_per_service: Option<usize>,
    max_concurrent_uploads: Option<usize>,
    max_connections: Option<u32>,
    upload_rate: Option<String>,
    share_partial: Option<bool>,
    compile_cache: Option<PathBuf>,
    #[serde(default)]
    pull: PullFile,
    #[serde(default)]
    allow: HashMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PullFile {
    strategy: Option<String>,
    parallel: Option<usize>,
    timeout: Option<String>,
    attempt_timeout: Option<String>,
    blocks_per_request: Option<u32>,
}

/// Options every node-starting command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Node configuration file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (identity, store, cache, control socket).
    /// Default: $SP2A_DATA_DIR, else ~/.sp2a.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The node policy (TOML); default: trust nobody, grant nothing.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long)]
    pub listen: Vec<Multiaddr>,
    /// Peer to join through (repeatable), ending in /p2p/<peer id>.
    #[arg(long)]
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    #[arg(long)]
    pub local: bool,
}

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SP2A_DATA_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".sp2a"))
        .unwrap_or_else(|| PathBuf::from(".sp2a"))
}

/// A node configuration assembled from the file and the flags (flags win).
pub struct Assembled {
    pub config: NodeConfig,
    pub policy: sp2a::policy::Policy,
    pub share: Vec<PathBuf>,
    /// Compiled artifacts: `<data dir>/cache`, or a directory shared with
    /// the other nodes of this host.
    pub compile_cache: PathBuf,
}

pub fn assemble(args: &NodeArgs, data_dir_override: Option<PathBuf>) -> anyhow::Result<Assembled> {
    let (file, base) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let file: NodeFile = toml::from_str(&text)
                .with_context(|| format!("invalid node configuration {}", path.display()))?;
            (file, path.parent().unwrap_or(Path::new(".")).to_path_buf())
        }
        None => (NodeFile::default(), PathBuf::from(".")),
    };
    let data_dir = data_dir_override
        .or_else(|| args.data_dir.clone())
        .or_else(|| file.data_dir.as_ref().map(|d| base.join(d)))
        .unwrap_or_else(default_data_dir);
    let policy_path = args
        .policy
        .clone()
        .or_else(|| file.policy.as_ref().map(|p| base.join(p)));
    let policy = super::load_policy(policy_path.as_deref())?;

    let mut config = NodeConfig::new(data_dir);
    let parse = |list: &[String]| -> anyhow::Result<Vec<Multiaddr>> {
        list.iter()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .with_context(|| format!("bad multiaddr {a:?}"))
            })
            .collect()
    };
    config.net.listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else if !file.listen.is_empty() {
        parse(&file.listen)?
    } else {
        vec![
            "/ip4/0.0.0.0/tcp/0".parse()?,
            "/ip4/0.0.0.0/udp/0/quic-v1".parse()?,
        ]
    };
    config.net.bootstrap = parse(&file.bootstrap)?;
    config.net.bootstrap.extend(args.bootstrap.iter().cloned());
    config.net.mdns = args.local || file.mdns;
    if let Some(n) = file.max_connections {
        config.net.max_connections = n;
    }
    if let Some(n) = file.max_invocations_per_service {
        config.max_invocations_per_service = n.max(1);
    }
    if let Some(n) = file.max_concurrent_uploads {
        config.max_concurrent_uploads = n.max(1);
    }
    if let Some(rate) = &file.upload_rate {
        config.upload_rate = Some(
            parse_size(rate)
                .map_err(anyhow::Error::msg)
                .context("upload-rate")?,
        );
    }
    if let Some(partial) = file.share_partial {
        config.share_partial = partial;
    }
    match file.pull.strategy.as_deref() {
        None | Some("swarm") => {}
        Some("sequential") => config.pull.strategy = sp2a::node::Strategy::Sequential,
        Some(other) => bail!("pull.strategy {other:?}: use \"swarm\" or \"sequential\""),
    }
    if let Some(n) = file.pull.parallel {
        config.pull.parallel = n.max(1);
    }
    if let Some(t) = &file.pull.timeout {
        config.pull.total_timeout = parse_duration(t)
            .map_err(anyhow::Error::msg)
            .context("pull.timeout")?;
    }
    if let Some(t) = &file.pull.attempt_timeout {
        config.pull.base_timeout = parse_duration(t)
            .map_err(anyhow::Error::msg)
            .context("pull.attempt-timeout")?;
    }
    if let Some(n) = file.pull.blocks_per_request {
        config.pull.blocks_per_request = n;
    }
    for (service, peers) in &file.allow {
        let peers: HashSet<PeerId> = peers
            .iter()
            .map(|p| {
                p.parse::<PeerId>()
                    .with_context(|| format!("allow.{service}: bad peer id {p:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        config.allow.insert(service.clone(), peers);
    }
    let share = file.share.iter().map(|p| base.join(p)).collect();
    let compile_cache = file
        .compile_cache
        .as_ref()
        .map(|dir| base.join(dir))
        .unwrap_or_else(|| config.data_dir.join("cache"));
    Ok(Assembled {
        config,
        policy,
        share,
        compile_cache,
    })
}

/// Starts a node from assembled settings.
pub async fn start(assembled: &Assembled) -> anyhow::Result<Node> {
    let sandbox = super::sandbox_for(&assembled.policy, Some(assembled.compile_cache.clone()))?;
    let node = Node::start(assembled.config.clone(), assembled.policy.clone(), sandbox)
        .await
        .context("cannot start the node")?;
    for address in &assembled.config.net.bootstrap {
        if let Err(e) = node.dial(address.clone()).await {
            tracing::warn!(%address, error = %e, "cannot reach bootstrap peer");
        }
    }
    Ok(node)
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: NodeArgs,
    /// A package to activate and provide (repeatable).
    #[arg(long)]
    share: Vec<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut assembled = assemble(&args.node, None)?;
    assembled.share.extend(args.share);
    let node = start(&assembled).await?;
    let control = sp2a::node::control::serve(node.clone(), &assembled.config.data_dir)
        .await
        .context("cannot open the control socket")?;
    for path in &assembled.share {
        let package = super::read_package(path)?;
        let name = package.manifest().name.clone();
        match node.share(package).await {
            Ok(id) => println!("sharing {name} ({})", id.short()),
            Err(e) => bail!("cannot share {}: {e}", path.display()),
        }
    }
    println!("peer id {}", node.peer_id());
    for address in node.addresses().await {
        println!("listening on {address}");
    }
    println!("data directory {}", assembled.config.data_dir.display());
    println!("ready");
    let mut events = node.events();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                NodeEvent::Pulled {
                    name,
                    content_id,
                    elapsed,
                } => {
                    println!(
                        "pulled {name} ({}) in {elapsed:.2?}; now providing it",
                        content_id.short()
                    )
                }
                NodeEvent::PeerBanned { peer, reason, .. } => println!("banned {peer}: {reason}"),
                _ => {}
            }
        }
    });
    wait_for_signal().await;
    println!("shutting down: withdrawing provider records");
    control.abort();
    printer.abort();
    let _ = std::fs::remove_file(sp2a::node::control::socket_path(&assembled.config.data_dir));
    node.shutdown().await;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
