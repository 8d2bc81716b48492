//! The demo's cheating provider: a peer that announces a real package of
//! `hello` and answers every call with a canned greeting, without running
//! the service, each answer with a valid signed receipt. A caller checks a
//! new provider's answers (the manifest declares the service deterministic)
//! by sending one of its self-tests as an ordinary call, catches the cheat
//! and stops calling it. One line per decision.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sp2a::net::evidence::Receipt;
use sp2a::net::protocol::{
    AdvertResponse, AdviceResponse, InvokeResponse, SolicitResponse, TransferResponse,
};
use sp2a::net::{Client, InboundRequest, Multiaddr, NetConfig, PeerId, keys};
use sp2a::node::{Node, NodeConfig, NodeEvent};
use sp2a::package::{Package, SecretKey};
use sp2a::policy::Policy;
use sp2a::sandbox::Sandbox;

/// What the cheat answers, whatever it is asked.
const CANNED: &str = "\"Hello, world!\"";
/// Calls made before the cheat is drawn, at most (past the first few, it
/// is drawn only in the newcomers' exploration share, 5% of calls).
const MAX_CALLS: usize = 300;
/// Calls shown before the cheat is drawn; the others are counted.
const SHOWN: usize = 4;
/// Calls made once it was caught.
const AFTER: usize = 6;

/// Starts the cheat next to `bootstrap`, announcing `package`.
async fn start_cheat(package: &Package, bootstrap: &[Multiaddr]) -> anyhow::Result<Client> {
    let key = sp2a::net::libp2p_identity();
    let signer = key.clone();
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: bootstrap.to_vec(),
        local_addresses: true,
        ..NetConfig::default()
    };
    let (client, mut inbound) = sp2a::net::event_loop::start(key, config).await?;
    for address in bootstrap {
        client.dial(address.clone()).await?;
    }
    let name = package.manifest().name.clone();
    client.start_providing(keys::service_key(&name)).await;
    client
        .start_providing(keys::package_key(&package.content_id().0))
        .await;
    let advert = package.advert().bytes().to_vec();
    let content_id = package.content_id();
    let serving = client.clone();
    tokio::spawn(async move {
        while let Some(request) = inbound.recv().await {
            match request {
                // The publisher's signed advert, unchanged: it cannot forge
                // another.
                InboundRequest::Advert { channel, .. } => {
                    let adverts = vec![serde_bytes::ByteBuf::from(advert.clone())];
                    serving
                        .respond_advert(channel, AdvertResponse::Adverts(adverts))
                        .await;
                }
                InboundRequest::Invoke {
                    peer,
                    request,
                    channel,
                    ..
                } => {
                    let receipt = Receipt::sign_answer(
                        &signer,
                        peer,
                        &request.service,
                        content_id.0,
                        &request.call,
                        CANNED,
                    );
                    let response = InvokeResponse::Ok {
                        value: CANNED.into(),
                        fuel: 1,
                        micros: 5,
                        content_id: content_id.0,
                        // It claims to be idle, to draw calls.
                        load: Some(0.0),
                        receipt: Some(receipt),
                    };
                    serving.respond_invoke(channel, response).await;
                }
                InboundRequest::Transfer { channel, .. } => {
                    serving
                        .respond_transfer(channel, TransferResponse::NotFound)
                        .await;
                }
                InboundRequest::Solicit { channel, .. } => {
                    let refused = SolicitResponse::Refused("not a standby".into());
                    serving.respond_solicit(channel, refused).await;
                }
                InboundRequest::Advice { channel, .. } => {
                    let none = AdviceResponse::Evaluations(Vec::new());
                    serving.respond_advice(channel, none).await;
                }
                InboundRequest::Gossip { .. } => {}
            }
        }
    });
    Ok(client)
}

/// The episode: an honest provider and the cheat offer `hello`; a caller
/// calls it until it has caught the cheat, then a few more times.
pub async fn demo(
    services: &Path,
    key: &SecretKey,
    out: &Path,
    policy: &Policy,
    sandbox: &Sandbox,
) -> anyhow::Result<()> {
    let start_node = async |label: &str, bootstrap: Vec<Multiaddr>| {
        let mut config = NodeConfig::new(out.join("nodes").join(label));
        config.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid address")];
        config.net.local_addresses = true;
        config.net.bootstrap = bootstrap;
        Node::start(config, policy.clone(), sandbox.clone()).await
    };
    let package = crate::services::pack(services, "hello", key, out)?;
    let honest = start_node("honest", Vec::new()).await?;
    honest.share(package.clone().into_inner()).await?;
    let bootstrap = honest.addresses().await;
    let cheat = start_cheat(&package, &bootstrap).await?;
    let caller = start_node("caller", bootstrap.clone()).await?;
    for address in &bootstrap {
        caller.dial(address.clone()).await?;
    }
    let names: HashMap<PeerId, &str> = [(honest.peer_id(), "honest"), (cheat.peer_id(), "cheat")]
        .into_iter()
        .collect();
    let name = |peer: &PeerId| names.get(peer).copied().unwrap_or("?");
    // Both providers findable before the first call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while caller.find_all("hello").await.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "providers of hello: honest {} and cheat {} (it answers {CANNED} to everything, with signed receipts)",
        short(&honest.peer_id()),
        short(&cheat.peer_id())
    );
    let mut checks = caller.events();
    let reputation = |peer: &PeerId| {
        caller
            .reputation("hello")
            .providers
            .iter()
            .find(|p| p.peer == peer.to_string())
            .map_or(0.5, |p| p.reputation)
    };
    let mut caught = false;
    let mut after = 0;
    let mut answered_before = HashSet::new();
    let mut quiet = 0;
    let who = ["ada", "grace", "edsger", "barbara", "donald", "leslie"];
    for i in 0..MAX_CALLS {
        let call = format!("greet(\"{}\")", who[i % who.len()]);
        let outcome = caller.invoke_remote("hello", &call).await?;
        if i >= SHOWN && !caught && outcome.peer != cheat.peer_id() {
            quiet += 1;
            continue;
        }
        if quiet > 0 {
            println!("  ({quiet} more calls, all answered by honest)");
            quiet = 0;
        }
        // The answer is judged beside the call: let that land first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        println!(
            "call {:>3}: {call} -> {} answered {} (its reputation now {:.2})",
            i + 1,
            name(&outcome.peer),
            outcome.value,
            reputation(&outcome.peer)
        );
        // Checks run beside the calls. A provider's first answer is always
        // checked: wait for that verdict; show any other that came.
        let first = answered_before.insert(outcome.peer);
        let until = Instant::now() + Duration::from_secs(if first { 5 } else { 0 });
        loop {
            let event = match tokio::time::timeout_at(until.into(), checks.recv()).await {
                Ok(Ok(event)) => event,
                _ => break,
            };
            let NodeEvent::Checked {
                provider,
                right,
                how,
                answer,
                expected,
                ..
            } = event
            else {
                continue;
            };
            let verdict = if right { "right" } else { "WRONG" };
            println!(
                "  check ({how}): {} answered {answer}, the manifest says {expected} -> {verdict}; its reputation now {:.2}",
                name(&provider),
                reputation(&provider)
            );
            caught |= !right && provider == cheat.peer_id();
            if provider == outcome.peer {
                break;
            }
        }
        if caught {
            after += 1;
            if after > AFTER {
                break;
            }
        }
    }
    if !caught {
        anyhow::bail!("the cheat was not caught in {MAX_CALLS} calls");
    }
    for p in caller.reputation("hello").providers {
        let peer: PeerId = p.peer.parse()?;
        println!(
            "reputation of {}: {:.2} after {} call(s){}",
            name(&peer),
            p.reputation,
            p.calls,
            p.last_wrong_secs_ago.map_or(String::new(), |s| format!(
                ", caught answering wrongly {s} s ago"
            ))
        );
    }
    cheat.shutdown().await;
    caller.shutdown().await;
    honest.shutdown().await;
    Ok(())
}

fn short(peer: &PeerId) -> String {
    let text = peer.to_string();
    format!("..{}", &text[text.len() - 6..])
}
