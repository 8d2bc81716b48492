//! `sp2a demo`: the whole single-node flow on the example services: keys,
//! packing, auditing, self-tests, calls, and the refusals and traps that
//! protect a node from bad packages and guests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use sp2a::node::{activate, audit_package};
use sp2a::package::{Package, SecretKey, pack};
use sp2a::policy::Policy;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `services/` directory: `<name>/rps.xml` manifests, and components in
    /// `target/wasm32-wasip2/release/<name>.wasm`.
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// Where to write keys, packages and the policy (default: a temporary directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn step(title: &str) {
    println!("\n== {title}");
}

pub async fn run(args: Options) -> anyhow::Result<ExitCode> {
    let temp;
    let out = match &args.out {
        Some(out) => {
            std::fs::create_dir_all(out)?;
            out.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };

    step("publisher key");
    let key = SecretKey::generate();
    key.write_pem_files(&out.join("publisher.pem"))?;
    println!("publisher {}", key.public());

    step("node policy: trust this publisher, grant a data directory");
    let data = out.join("data");
    std::fs::create_dir_all(&data)?;
    let policy_text = format!(
        "[trust]\npublishers = [\"{}\"]\n\n[grants]\nclocks = true\nrandom = true\nfs-root = \"data\"\nfs-access = \"read-write\"\n\n[limits]\nmax-memory = \"64 MiB\"\n",
        key.public()
    );
    std::fs::write(out.join("policy.toml"), &policy_text)?;
    print!("{policy_text}");
    let policy = Policy::load(&out.join("policy.toml"))?;
    let sandbox = sp2a::sandbox::Sandbox::new(policy.sandbox_config(Some(out.join("cache"))))?;

    let mut packages = Vec::new();
    for name in ["hello", "checksum", "notes", "stream"] {
        step(&format!("pack {name}"));
        let package = crate::services::pack(&args.services, name, &key, &out)?;
        println!(
            "{} {} -> {}.rps ({} bytes), content id {}",
            name,
            package.manifest().version,
            name,
            package.to_bytes().len(),
            package.content_id().short()
        );
        packages.push(package);
    }

    for package in &packages {
        step(&format!("audit {}", package.manifest().name));
        let report = audit_package(&sandbox, &policy, package.clone().into_inner()).await;
        let audit = report
            .audit
            .as_ref()
            .context("audit did not compile the component")?;
        println!(
            "signature {}, publisher {}, {} imports, exports {}",
            if report.signature.is_ok() {
                "valid"
            } else {
                "INVALID"
            },
            if report.publisher_trusted {
                "trusted"
            } else {
                "untrusted"
            },
            audit.imports.len(),
            audit
                .exports
                .iter()
                .flat_map(|e| e.functions.iter().map(|(f, _)| f.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "capabilities: {}",
            if report.manifest.capabilities.is_empty() {
                "none".to_owned()
            } else {
                report.manifest.capabilities.join(", ")
            }
        );
        println!(
            "verdict: {}",
            if report.would_activate() {
                "would activate"
            } else {
                "REFUSED"
            }
        );
        if !report.would_activate() {
            bail!(
                "{} was refused: {}",
                report.name,
                report
                    .refusals
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }

    let calls: [(&str, &[&str]); 4] = [
        ("hello", &["greet(\"world\")"]),
        (
            "checksum",
            &[
                "blake3-text(\"sp2a\")",
                "sha256-text(\"sp2a\")",
                "digest.blake3([1, 2, 3])",
                "blake3-chain([], 100000)",
            ],
        ),
        (
            "notes",
            &[
                "put(\"todo\", \"ship the pull approach\")",
                "names()",
                "get(\"todo\")",
                "get(\"../../etc/passwd\")",
            ],
        ),
        ("stream", &["segment-digest(0)", "segment(99)"]),
    ];
    for (package, (name, calls)) in packages.iter().zip(calls) {
        step(&format!("activate and call {name}"));
        let service = activate(&sandbox, &policy, Package::clone(package)).await?;
        println!(
            "self-tests passed ({}), component {:?} in {:.1?}",
            package.manifest().self_tests.len(),
            service.activation.compiled().source,
            service.activation.compiled().elapsed
        );
        for call in calls {
            match service.activation.invoke(call).await {
                Ok(outcome) => println!(
                    "{call} -> {}   [{} fuel, {:.2?}]",
                    outcome.value, outcome.fuel_used, outcome.elapsed
                ),
                Err(e) => println!("{call} -> error: {e}"),
            }
        }
        if name == "checksum" {
            let call = "blake3-chain([], 4000000000)";
            match service.activation.invoke(call).await {
                Ok(outcome) => bail!(
                    "{call} should have run out of fuel, returned {}",
                    outcome.value
                ),
                Err(e) => println!("{call} -> refused: {e}"),
            }
        }
    }

    step("hostile packages are refused");
    let good = packages[0].to_bytes();
    let mut flipped = good.clone();
    let last = flipped.len() - 100;
    flipped[last] ^= 0x40;
    match Package::parse(&flipped).map(|p| p.verify()) {
        Ok(Ok(_)) => bail!("a flipped byte went unnoticed"),
        Ok(Err(e)) | Err(e) => println!("one flipped byte -> {e}"),
    }
    let stranger = SecretKey::generate();
    let mut manifest = packages[0].manifest().clone();
    manifest.owner = None;
    let resigned = pack(packages[0].component().to_vec(), &manifest, &stranger)?;
    match activate(&sandbox, &policy, resigned.into_inner()).await {
        Ok(_) => bail!("a package from an untrusted publisher was activated"),
        Err(e) => println!("re-signed by an unknown key -> {e}"),
    }
    match Package::parse(&good[..good.len() / 2]) {
        Ok(_) => bail!("a truncated package parsed"),
        Err(e) => println!("truncated package -> {e}"),
    }

    network(&args.services, &key, &out, &sandbox).await?;

    println!("\ndemo files are in {}", out.display());
    if args.out.is_none() {
        println!("(temporary; pass --out DIR to keep them)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The pull approach on one machine: one provider and several consumers,
/// real libp2p nodes on loopback in this process.
async fn network(
    services: &Path,
    key: &SecretKey,
    out: &Path,
    sandbox: &sp2a::sandbox::Sandbox,
) -> anyhow::Result<()> {
    use sp2a::node::{Node, NodeConfig, NodeEvent};
    use std::collections::HashMap;
    use std::time::Instant;

    const CONSUMERS: usize = 5;
    const UPLINK: u64 = 2 << 20;
    step(&format!(
        "the pull approach: 1 provider, {CONSUMERS} consumers (libp2p over loopback TCP, in this process, \
         each node's uplink limited to {} MiB/s)",
        UPLINK >> 20
    ));
    let policy = Policy::load(&out.join("policy.toml"))?;
    let start_node = |label: String, bootstrap: Vec<sp2a::net::Multiaddr>| {
        let mut config = NodeConfig::new(out.join("nodes").join(&label));
        config.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid address")];
        // Every node is on this host: loopback addresses from peer exchange are fine.
        config.net.local_addresses = true;
        config.net.bootstrap = bootstrap;
        config.upload.rate = Some(UPLINK);
        let policy = policy.clone();
        let sandbox = sandbox.clone();
        async move { Node::start(config, policy, sandbox).await }
    };
    let provider = start_node("provider".into(), Vec::new()).await?;
    let package = crate::services::pack(services, "stream", key, out)?;
    provider.share(package.clone().into_inner()).await?;
    let bootstrap = provider.addresses().await;
    println!(
        "provider {} shares stream {} ({} bytes, content id {})",
        short(&provider.peer_id()),
        package.manifest().version,
        package.advert().component_len(),
        package.content_id().short()
    );

    let mut consumers = Vec::new();
    let mut labels = HashMap::new();
    labels.insert(provider.peer_id(), "provider".to_owned());
    for i in 1..=CONSUMERS {
        let node = start_node(format!("consumer-{i}"), bootstrap.clone()).await?;
        for address in &bootstrap {
            node.dial(address.clone()).await?;
        }
        labels.insert(node.peer_id(), format!("consumer-{i}"));
        consumers.push(node);
    }
    let labels = std::sync::Arc::new(labels);
    let started = Instant::now();
    let mut printers = Vec::new();
    let uploaded = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, u64>::new()));
    for node in consumers.iter().chain([&provider]) {
        let mut events = node.events();
        let me = labels[&node.peer_id()].clone();
        let uploaded = uploaded.clone();
        printers.push(tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let NodeEvent::Served { bytes, .. } = event {
                    *uploaded
                        .lock()
                        .expect("lock")
                        .entry(me.clone())
                        .or_default() += bytes;
                }
            }
        }));
    }
    for node in &consumers {
        let mut events = node.events();
        let me = labels[&node.peer_id()].clone();
        let labels = labels.clone();
        printers.push(tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                let at = started.elapsed().as_millis();
                match event {
                    NodeEvent::Found { providers, elapsed, .. } => {
                        println!("[{at:>5} ms] {me}: found {providers} provider(s) in {elapsed:.1?}; advert verified, requirements met")
                    }
                    NodeEvent::Downloaded { bytes, from, elapsed, .. } => {
                        let from: Vec<&str> = from.iter().map(|p| labels.get(p).map_or("?", String::as_str)).collect();
                        println!("[{at:>5} ms] {me}: downloaded {bytes} bytes in {elapsed:.1?}, every block verified, from {}", from.join(", "))
                    }
                    NodeEvent::Pulled { elapsed, .. } => {
                        println!("[{at:>5} ms] {me}: self-tests passed, active after {elapsed:.1?}; now a provider")
                    }
                    _ => {}
                }
            }
        }));
    }
    let pulls = consumers.iter().map(|node| node.pull("stream"));
    for (node, result) in consumers.iter().zip(futures::future::join_all(pulls).await) {
        result.map_err(|e| anyhow::anyhow!("{}: {e}", labels[&node.peer_id()]))?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for printer in printers {
        printer.abort();
    }
    let providers = consumers[0].find("stream").await.len() + 1;
    println!("stream is now provided by {providers} nodes");
    let mut uploaded: Vec<(String, u64)> =
        uploaded.lock().expect("lock").clone().into_iter().collect();
    uploaded.sort();
    let uploaded: Vec<String> = uploaded
        .iter()
        .map(|(who, bytes)| format!("{who} {} KiB", bytes >> 10))
        .collect();
    println!("uploaded: {}", uploaded.join(", "));

    step("a newcomer calls the service remotely, without downloading it");
    let viewer = start_node("viewer".into(), bootstrap.clone()).await?;
    for address in &bootstrap {
        viewer.dial(address.clone()).await?;
    }
    let outcome = viewer.invoke_remote("stream", "segment-digest(7)").await?;
    println!(
        "segment-digest(7) -> {} from {} in {:.1?}",
        outcome.value,
        labels.get(&outcome.peer).map_or("?", String::as_str),
        outcome.round_trip
    );

    step("a node that does not trust the publisher refuses before downloading");
    let mut config = NodeConfig::new(out.join("nodes/sceptic"));
    config.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    let sceptic = Node::start(config, Policy::default(), sandbox.clone()).await?;
    for address in &bootstrap {
        sceptic.dial(address.clone()).await?;
    }
    match sceptic.pull("stream").await {
        Ok(_) => anyhow::bail!("an untrusted package was pulled"),
        Err(e) => println!("{e}"),
    }
    for node in consumers.iter().chain([&provider, &viewer, &sceptic]) {
        node.shutdown().await;
    }

    step("a cheating provider is caught by a self-test sent as an ordinary call, and avoided");
    crate::cheat::demo(services, key, out, &policy, sandbox).await?;

    step(
        "a flash crowd on a live feed: the providers ask standby nodes to pull the live channel, then retire them",
    );
    crate::adapt::demo_crowd(services).await?;
    Ok(())
}

fn short(peer: &sp2a::net::PeerId) -> String {
    let text = peer.to_string();
    format!("..{}", &text[text.len() - 6..])
}
