//! `sp2a find`, `sp2a pull`, `sp2a status` and `sp2a call NAME`: ask the
//! running node (through its control socket), or, with `--bootstrap`, a
//! short-lived node of their own.

use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sp2a::node::control::{self, ControlReply, ControlRequest};

use super::node::{NodeArgs, start};

/// Sends `request` to the local node, or runs it on a short-lived node when
/// `--bootstrap` is given.
pub async fn perform(
    args: &NodeArgs,
    request: ControlRequest,
    progress: impl FnMut(ControlReply) + Send,
) -> anyhow::Result<ControlReply> {
    if args.bootstrap.is_empty() {
        let data_dir = args.data_dir()?;
        let mut progress = progress;
        return control::request(&data_dir, &request, |p| progress(p.clone()))
            .await
            .map_err(anyhow::Error::from);
    }
    // A node of our own for this one command, in a temporary data
    // directory unless one was given.
    let temp = tempfile::tempdir()?;
    let mut config = args.configure(Vec::new())?;
    if args.data_dir.is_none() {
        config.data_dir = temp.path().to_path_buf();
    }
    if args.listen.is_empty() {
        config.net.listen = vec!["/ip4/0.0.0.0/tcp/0".parse()?];
    }
    let node = start(&config).await?;
    let reply = control::execute(&node, request, progress).await;
    node.shutdown().await;
    Ok(reply)
}

fn fail(reply: ControlReply) -> anyhow::Result<ExitCode> {
    match reply {
        ControlReply::Error(message) => bail!("{message}"),
        other => bail!("unexpected reply from the node: {other:?}"),
    }
}

#[derive(Debug, clap::Args)]
pub struct FindArgs {
    /// Service name.
    name: String,
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn find(args: FindArgs) -> anyhow::Result<ExitCode> {
    let reply = perform(
        &args.node,
        ControlRequest::Find {
            name: args.name.clone(),
        },
        |_| {},
    )
    .await?;
    let ControlReply::Found(found) = reply else {
        return fail(reply);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        println!("no provider of {} found", args.name);
    } else {
        println!("{} provider(s) of {}:", found.len(), args.name);
        for f in &found {
            if f.trusted {
                println!(
                    "  {} {} {} ({} bytes, publisher {}, trusted) from {}",
                    f.name,
                    f.version,
                    f.content_id.get(..12).unwrap_or(&f.content_id),
                    f.size,
                    f.publisher.get(..24).unwrap_or(&f.publisher),
                    f.peer
                );
            } else {
                println!(
                    "  {} by publisher {}, NOT trusted (advert not read) from {}",
                    f.name, f.publisher, f.peer
                );
            }
        }
    }
    Ok(if found.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Service name (newest acceptable version) or package content id.
    target: String,
    #[command(flatten)]
    node: NodeArgs,
}

pub async fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("finding {}", args.target));
    let shown = bar.clone();
    let reply = perform(
        &args.node,
        ControlRequest::Pull {
            target: args.target.clone(),
        },
        move |p| {
            if let ControlReply::Progress {
                stage,
                bytes,
                total,
                provider,
            } = p
            {
                shown.set_length(total);
                shown.set_position(bytes);
                let from = provider
                    .map(|p| format!(" from {}", &p[p.len().saturating_sub(8)..]))
                    .unwrap_or_default();
                shown.set_message(format!("{stage}{from}"));
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    let ControlReply::Pulled {
        name,
        content_id,
        bytes,
        discovery_ms,
        download_ms,
        deploy_ms,
        sources,
        paths,
        first_byte_ms,
        downloaded,
    } = reply
    else {
        return fail(reply);
    };
    if downloaded {
        let first = first_byte_ms.map_or_else(String::new, |ms| format!("first byte {ms} ms, "));
        println!(
            "pulled {name} ({}): {bytes} bytes from {} provider(s); discovery {discovery_ms} ms, {first}download {download_ms} ms, active after {deploy_ms} ms",
            &content_id[..12],
            sources.len()
        );
        for path in &paths {
            println!("  from {path}");
        }
    } else {
        println!(
            "{name} ({}) is already active on this node",
            &content_id[..12]
        );
    }
    println!("this node now provides {name}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let reply = perform(&args.node, ControlRequest::Status, |_| {}).await?;
    let ControlReply::Status(status) = reply else {
        return fail(reply);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("peer id   {}", status.peer_id);
    for address in &status.listen {
        println!("listening {address}");
    }
    println!(
        "peers     {} connected, {} in the routing table",
        status.peers.len(),
        status.routing_table
    );
    print_reach(&status);
    let announced = status
        .announcements
        .iter()
        .filter(|a| a.state == "announced")
        .count();
    println!(
        "dht       {announced}/{} key(s) announced, {} record(s) from others held",
        status.announcements.len(),
        status.provider_records
    );
    for a in status
        .announcements
        .iter()
        .filter(|a| a.state != "announced")
    {
        match &a.error {
            Some(error) => println!(
                "  {} {} ({} failure(s): {error}; retry in {} s)",
                a.key,
                a.state,
                a.failures,
                a.retry_in_secs.unwrap_or(0)
            ),
            None => println!("  {} {}", a.key, a.state),
        }
    }
    println!("services  {}", status.services.len());
    for s in &status.services {
        let p95 = s
            .p95_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
        println!(
            "  {} {} {} ({}, {} bytes), {}/{} call(s) running; last 5 s: {:.1} calls/s, p95 {p95}, {:.1} busy/s",
            s.role,
            s.name,
            s.version,
            &s.content_id[..12],
            s.size,
            s.busy_invocations,
            s.limit,
            s.calls_per_s,
            s.busy_per_s
        );
        if let Some(g) = &s.group {
            println!(
                "    group: {} provider(s), load {:.2} providers' worth, {} needed{}",
                g.providers,
                g.load,
                g.needed,
                if g.violated { ", QoS missed" } else { "" }
            );
            if let Some(decision) = &g.last_decision {
                println!("    last decision: {decision}");
            }
        }
    }
    if !status.standby.is_empty() {
        println!("standby   for {}", status.standby.join(", "));
    }
    for f in &status.feeds {
        let range = match (f.oldest, f.latest) {
            (Some(oldest), Some(latest)) => format!("segments {oldest}..={latest}"),
            _ => "no segment yet".into(),
        };
        println!(
            "feed      {} from {}: {range} ({} held, {} bytes), {} accepted, {} refused",
            f.name, f.publisher, f.segments, f.bytes, f.accepted, f.refused
        );
    }
    println!("transfers {}", status.transfers.len());
    for t in &status.transfers {
        println!(
            "  {} {} {}/{} bytes from {}",
            t.target,
            t.stage,
            t.bytes,
            t.total,
            t.provider.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sp2a call NAME CALL [--remote]` through a node.
pub async fn call(
    node: &NodeArgs,
    service: String,
    call: String,
    remote: bool,
) -> anyhow::Result<ExitCode> {
    let reply = perform(
        node,
        ControlRequest::Call {
            service: service.clone(),
            call: call.clone(),
            remote,
        },
        |_| {},
    )
    .await
    .with_context(|| format!("{call} on {service}"))?;
    let ControlReply::Called {
        value,
        peer,
        micros,
    } = reply
    else {
        return fail(reply);
    };
    println!("{value}");
    match peer {
        Some(peer) => tracing::info!(%peer, micros, "remote call"),
        None => tracing::info!(micros, "local call"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct ReputationArgs {
    /// The service whose providers to show.
    service: String,
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The providers of a service as the node judges them: reputation, the
/// evidence it rests on, the last wrong answer caught, pins and blocks.
pub async fn reputation(args: ReputationArgs) -> anyhow::Result<ExitCode> {
    let request = ControlRequest::Reputation {
        service: args.service.clone(),
    };
    let reply = perform(&args.node, request, |_| {}).await?;
    let ControlReply::Reputation(standing) = reply else {
        return fail(reply);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&standing)?);
        return Ok(ExitCode::SUCCESS);
    }
    if standing.providers.is_empty() {
        println!(
            "no provider of {} judged yet: this node has not called it",
            standing.service
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<54} {:>10} {:>6} {:>8} {:>9}  last wrong answer",
        "provider", "reputation", "calls", "own", "advisors"
    );
    for p in &standing.providers {
        let mut notes = Vec::new();
        if p.newcomer {
            notes.push("newcomer");
        }
        if p.pinned {
            notes.push("pinned");
        }
        if p.blocked {
            notes.push("blocked");
        }
        let wrong = p
            .last_wrong_secs_ago
            .map_or("never".to_owned(), |s| format!("{s} s ago"));
        println!(
            "{:<54} {:>10.3} {:>6} {:>8.1} {:>4} ({:.1}) {wrong}{}",
            p.peer,
            p.reputation,
            p.calls,
            p.own,
            p.advisors,
            p.advised,
            if notes.is_empty() {
                String::new()
            } else {
                format!("  [{}]", notes.join(", "))
            }
        );
    }
    println!(
        "accuracy checks {} ({} wrong); advice admitted {}, refused {}",
        standing.checks, standing.wrong, standing.advice_admitted, standing.advice_refused
    );
    if let Some(reason) = &standing.last_refusal {
        println!("last advice refused: {reason}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reachability, addresses, relays and connections of `sp2a status`.
fn print_reach(status: &sp2a::node::Status) {
    let reach = &status.reach;
    let meaning = match reach.reachability.as_str() {
        "public" => "peers on the internet can dial it",
        "private" => "reachable only through relays",
        _ => "not tested yet",
    };
    println!(
        "reach     {} ({meaning}); DHT {}",
        reach.reachability, reach.dht
    );
    for (address, how) in &reach.confirmed {
        println!("  confirmed {address} ({how})");
    }
    for (address, why) in &reach.refuted {
        println!("  refuted   {address}: {why}");
    }
    for address in &reach.relayed {
        println!("  relayed   {address}");
    }
    println!(
        "relaying  {} reservation(s), {} circuit(s) open, {} closed",
        reach.relaying_reservations, reach.relaying_circuits, reach.relaying_circuits_closed
    );
    let relayed = status
        .connections
        .iter()
        .filter(|c| c.path == "relayed")
        .count();
    println!(
        "links     {} direct, {relayed} relayed",
        status.connections.len() - relayed
    );
    for c in &status.connections {
        println!("  {} {} {} {}", c.path, c.direction, c.peer, c.remote);
    }
    if !status.gossip_penalised.is_empty() {
        let graylisted = status
            .gossip_penalised
            .iter()
            .filter(|p| p.graylisted)
            .count();
        println!(
            "gossip    {} peer(s) penalised for invalid messages, {graylisted} graylisted",
            status.gossip_penalised.len()
        );
        for p in &status.gossip_penalised {
            let state = if p.graylisted { "graylisted" } else { "pruned" };
            println!("  {state} {} (score {:.0})", p.peer, p.score);
        }
    }
}
