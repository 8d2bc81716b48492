//! `sp2a node`: run a node until Ctrl-C; and the flags every command that
//! starts a node of its own shares. The configuration file format lives in
//! the library (`sp2a::node::config`); flags override the file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sp2a::net::Multiaddr;
use sp2a::node::{Node, NodeConfig, NodeEvent, Overrides};

/// Options every node-starting command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Node configuration file (TOML; see the library's `node::config`).
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
    /// An address this node is reachable at from the internet (repeatable):
    /// a public host's, or a port forwarded on the router. Advertised at
    /// once; withdrawn if a peer cannot dial it back (AutoNAT).
    #[arg(long)]
    pub external: Vec<Multiaddr>,
    /// Local mode, for nodes on one host or LAN: discover peers with mDNS,
    /// and dial private and loopback addresses other peers pass on.
    #[arg(long)]
    pub local: bool,
}

impl NodeArgs {
    /// The data directory these flags name (for talking to a running node).
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self.configure(Vec::new())?.data_dir)
    }

    /// The configuration: the file (if any), then the flags over it.
    pub fn configure(&self, share: Vec<PathBuf>) -> anyhow::Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => NodeConfig::load(path)?,
            None => NodeConfig::new(NodeConfig::default_data_dir()),
        };
        config.apply(Overrides {
            data_dir: self.data_dir.clone(),
            policy: self.policy.clone(),
            listen: self.listen.clone(),
            bootstrap: self.bootstrap.clone(),
            external: self.external.clone(),
            local: self.local,
            share,
            standby: Vec::new(),
        });
        Ok(config)
    }
}

/// Starts a node as configured and dials its bootstrap peers.
pub async fn start(config: &NodeConfig) -> anyhow::Result<Node> {
    let policy = config.load_policy()?;
    let sandbox = super::sandbox_for(&policy, Some(config.compile_cache_dir()))?;
    let node = Node::start(config.clone(), policy, sandbox)
        .await
        .context("cannot start the node")?;
    for address in &config.net.bootstrap {
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
    /// A package to activate and provide (repeatable); pinned here.
    #[arg(long)]
    share: Vec<PathBuf>,
    /// Offer this node as a standby for a service (repeatable): its
    /// providers may ask it to host the service when load grows.
    #[arg(long, value_name = "NAME")]
    standby: Vec<String>,
    /// Serve Prometheus metrics (OpenMetrics text) at
    /// `http://ADDR/metrics`, e.g. `127.0.0.1:9464`. Off unless given;
    /// read-only, and bound only where this says.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Serve a read-only dashboard of this node at `http://ADDR/`, e.g.
    /// `127.0.0.1:9465`. Off unless given. Beyond loopback every request
    /// needs the token printed with the address (SP2A_DASHBOARD_TOKEN sets
    /// it, at least 16 characters; else it is random).
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<std::net::SocketAddr>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(bad) = args
        .standby
        .iter()
        .find(|n| !sp2a::package::is_service_name(n))
    {
        bail!("--standby {bad:?} is not a service name");
    }
    let mut config = args.node.configure(args.share)?;
    config.apply(sp2a::node::Overrides {
        standby: args.standby,
        ..Default::default()
    });
    let node = start(&config).await?;
    let control = sp2a::node::control::serve(node.clone(), &config.data_dir)
        .await
        .context("cannot open the control socket")?;
    let metrics = match args.metrics {
        Some(address) => {
            let (bound, server) = crate::metrics::serve(node.clone(), address).await?;
            println!("metrics on http://{bound}/metrics");
            Some(server)
        }
        None => None,
    };
    let dashboard = match args.dashboard {
        Some(address) => {
            let (bound, token, server) = crate::dashboard::serve(node.clone(), address).await?;
            match token {
                Some(token) => println!("dashboard on http://{bound}/?token={token}"),
                None => println!("dashboard on http://{bound}/"),
            }
            Some(server)
        }
        None => None,
    };
    for path in &config.share {
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
    println!("data directory {}", config.data_dir.display());
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
    for server in [metrics, dashboard].into_iter().flatten() {
        server.abort();
    }
    let _ = std::fs::remove_file(sp2a::node::control::socket_path(&config.data_dir));
    node.shutdown().await;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Returns on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
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
