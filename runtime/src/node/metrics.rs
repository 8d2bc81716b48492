//! The node's Prometheus metrics, in the OpenMetrics text format: what
//! `sp2a node --metrics ADDR` serves at `/metrics`.
//!
//! Counted as things happen (they never miss an event, unlike the lossy
//! event stream): calls per service and outcome (`ok`, the sandbox's error
//! kinds such as `trap` or `out-of-fuel`, `busy`, `denied`), call latency,
//! fuel used, pulls per outcome and the time of each pull stage, peers
//! banned for bad data, bytes downloaded. Read at scrape time from the
//! node's status: invocations in flight per service, uploads (requests,
//! `Busy` answers, blocks and bytes served), provider records held,
//! announcements per state, connected peers, transfers in progress.
//!
//! Every node event, by kind (`sp2a_events_total{event}`): shares, pulls
//! and their steps, peers banned, uploads served, calls from peers,
//! replication's decisions (`diffusion`: standbys asked to pull;
//! `regression`: this replica retired; `prefetched`) and reputation's
//! answer checks (`checked-right`, `checked-wrong`). libp2p's own metrics
//! under `sp2a_libp2p_`: bytes in and out per transport and protocol,
//! connections, dial and listen errors, Kademlia queries (results,
//! durations, steps) and inbound requests, identify, ping, gossipsub.
//!
//! Labels are service names (checked names from signed manifests) and
//! fixed words, so a peer cannot grow the number of series beyond the
//! services this node runs (libp2p's labels are protocol names and error
//! kinds; identify's protocol labels are limited to those libp2p knows).

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::status::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// Node events counted by kind, shared with the event sender.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventCounts(Family<EventLabel, Counter>);

impl EventCounts {
    pub(crate) fn count(&self, event: &'static str) {
        self.0.get_or_create(&EventLabel { event }).inc();
    }
}

fn latency_histogram() -> Histogram {
    // 50 us to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn stage_histogram() -> Histogram {
    // 1 ms to about 9 minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The counters a node keeps from its start.
pub(crate) struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<ServiceLabel, Histogram, fn() -> Histogram>,
    fuel: Family<ServiceLabel, Counter>,
    pulls: Family<OutcomeLabel, Counter>,
    pull_seconds: Family<StageLabel, Histogram, fn() -> Histogram>,
    downloaded_bytes: Counter,
    blocks_verified: Counter,
    blocks_rejected: Counter,
    bans: Counter,
    events: EventCounts,
    /// One scrape at a time builds the status-derived part.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("sp2a");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls a service answered or refused here, by outcome (ok, busy, denied, or the error kind: bad-call, trap, out-of-fuel, deadline, memory, stack-overflow, host)",
            calls.clone(),
        );
        let call_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "call_duration_seconds",
            "Time from a call's start to its answer, per service",
            call_seconds.clone(),
        );
        let fuel = Family::<ServiceLabel, Counter>::default();
        registry.register(
            "fuel_consumed",
            "Wasm fuel used by calls that returned, per service",
            fuel.clone(),
        );
        let pulls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "pulls",
            "Pulls finished, by outcome (ok, not-found, refused, gave-up, activate)",
            pulls.clone(),
        );
        let pull_seconds = Family::new_with_constructor(stage_histogram as fn() -> Histogram);
        registry.register(
            "pull_stage_duration_seconds",
            "Time of each stage of a successful pull: discovery, download, deploy (start to providing)",
            pull_seconds.clone(),
        );
        let downloaded_bytes = Counter::default();
        registry.register(
            "downloaded_bytes",
            "Component bytes downloaded and verified by pulls",
            downloaded_bytes.clone(),
        );
        let blocks_verified = Counter::default();
        registry.register(
            "blocks_verified",
            "Blocks of downloads that verified against the advert's hash as they arrived",
            blocks_verified.clone(),
        );
        let blocks_rejected = Counter::default();
        registry.register(
            "blocks_rejected",
            "Answers to block requests that failed verification (bad data, out of range)",
            blocks_rejected.clone(),
        );
        let bans = Counter::default();
        registry.register(
            "peers_banned",
            "Peers banned from a download for sending data that failed verification",
            bans.clone(),
        );
        let events = EventCounts::default();
        registry.register(
            "events",
            "Node events by kind: shared, pull-started, found, downloaded, pulled, prefetched, peer-banned, served, invoked, diffusion, regression, checked-right, checked-wrong",
            events.0.clone(),
        );
        Self {
            registry,
            events,
            calls,
            call_seconds,
            fuel,
            pulls,
            pull_seconds,
            downloaded_bytes,
            blocks_verified,
            blocks_rejected,
            bans,
            scrape: Mutex::new(()),
        }
    }

    /// A call of `service` that ran: `Ok(fuel)` or the error kind.
    pub(crate) fn call(&self, service: &str, outcome: Result<u64, &str>, latency: Duration) {
        let label = ServiceLabel {
            service: service.to_owned(),
        };
        let outcome = match outcome {
            Ok(fuel) => {
                self.fuel.get_or_create(&label).inc_by(fuel);
                "ok"
            }
            Err(kind) => kind,
        };
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.call_seconds
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
    }

    /// A call of `service` refused before it ran: `busy` or `denied`.
    pub(crate) fn refused(&self, service: &str, outcome: &'static str) {
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A pull that ended in `outcome`; for one that succeeded and
    /// downloaded, its stages and bytes.
    pub(crate) fn pull(&self, outcome: &str, stages: &[(&str, Duration)], bytes: u64) {
        self.pulls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        for (stage, time) in stages {
            self.pull_seconds
                .get_or_create(&StageLabel {
                    stage: (*stage).to_owned(),
                })
                .observe(time.as_secs_f64());
        }
        self.downloaded_bytes.inc_by(bytes);
    }

    /// Where libp2p records its own metrics (before the node starts; it
    /// adds its `libp2p_` prefix itself).
    pub(crate) fn libp2p_registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The count of node events by kind, shared with the event sender.
    pub(crate) fn event_counts(&self) -> EventCounts {
        self.events.clone()
    }

    /// A download's answer checked: the blocks in it that verified, and
    /// whether the rest of it was refused.
    pub(crate) fn blocks(&self, verified: u32, rejected: bool) {
        self.blocks_verified.inc_by(u64::from(verified));
        if rejected {
            self.blocks_rejected.inc();
        }
    }

    /// The counter of peers banned, shared with whoever bans them.
    pub(crate) fn bans(&self) -> Counter {
        self.bans.clone()
    }

    /// Everything, as OpenMetrics text: the counters, then what `status`
    /// says now.
    pub(crate) fn render(&self, status: &Status) -> String {
        let _one = self.scrape.lock().expect("scrape lock");
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String");
        encode_registry(&mut out, &now_registry(status)).expect("writing to a String");
        encode_eof(&mut out).expect("writing to a String");
        out
    }
}

/// What the status says now, as gauges and counters.
fn now_registry(status: &Status) -> Registry {
    let mut registry = Registry::with_prefix("sp2a");
    let gauge = |value: usize| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge
    };
    let counter = |value: u64| {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        counter
    };
    let in_flight = Family::<ServiceLabel, Gauge>::default();
    let limit = Family::<ServiceLabel, Gauge>::default();
    for service in &status.services {
        let label = ServiceLabel {
            service: service.name.clone(),
        };
        in_flight
            .get_or_create(&label)
            .set(i64::try_from(service.busy_invocations).unwrap_or(i64::MAX));
        limit
            .get_or_create(&label)
            .set(i64::try_from(service.limit).unwrap_or(i64::MAX));
    }
    registry.register(
        "instances",
        "Invocations of a service running now",
        in_flight,
    );
    registry.register(
        "instance_limit",
        "Invocations a service may run at once here (the paper's L)",
        limit,
    );
    registry.register(
        "services",
        "Services this node runs",
        gauge(status.services.len()),
    );
    registry.register("peers", "Connected peers", gauge(status.peers.len()));
    registry.register(
        "routing_table_peers",
        "Peers in the Kademlia routing table",
        gauge(status.routing_table),
    );
    registry.register(
        "provider_records",
        "Provider records from other peers held in this node's DHT store",
        gauge(status.provider_records),
    );
    let announcements = Family::<StateLabel, Gauge>::default();
    for announcement in &status.announcements {
        announcements
            .get_or_create(&StateLabel {
                state: announcement.state.clone(),
            })
            .inc();
    }
    registry.register(
        "announcements",
        "Keys this node announces in the DHT, by state (announced, pending, failed)",
        announcements,
    );
    registry.register(
        "transfers",
        "Pulls in progress",
        gauge(status.transfers.len()),
    );
    let reach = &status.reach;
    let reachability = Family::<StateLabel, Gauge>::default();
    for state in ["public", "private", "unknown"] {
        reachability
            .get_or_create(&StateLabel {
                state: state.into(),
            })
            .set(i64::from(reach.reachability == state));
    }
    registry.register(
        "reachability",
        "1 for what this node knows of its reachability (public, private, unknown)",
        reachability,
    );
    registry.register(
        "confirmed_addresses",
        "Direct addresses of this node confirmed reachable",
        gauge(reach.confirmed.len()),
    );
    registry.register(
        "relay_reservations",
        "Reservations this node holds on relays",
        gauge(reach.relayed.len()),
    );
    let connections = Family::<PathLabel, Gauge>::default();
    for path in ["direct", "relayed"] {
        let open = status.connections.iter().filter(|c| c.path == path).count();
        connections
            .get_or_create(&PathLabel { path: path.into() })
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }
    registry.register(
        "connections",
        "Open connections, direct or through a relay",
        connections,
    );
    registry.register(
        "relaying_reservations",
        "As a relay: peers holding a reservation here",
        gauge(reach.relaying_reservations),
    );
    registry.register(
        "relaying_circuits",
        "As a relay: circuits open now",
        gauge(reach.relaying_circuits),
    );
    registry.register(
        "relaying_circuits_closed",
        "As a relay: circuits ended (by their limits or otherwise)",
        counter(reach.relaying_circuits_closed),
    );
    let uploads = &status.counters;
    registry.register(
        "transfer_requests",
        "Transfer requests answered (block ranges and Have)",
        counter(uploads.transfer_requests),
    );
    registry.register(
        "transfer_busy",
        "Transfer requests answered Busy (upload slots and line full)",
        counter(uploads.busy),
    );
    registry.register(
        "blocks_served",
        "Verified blocks sent to other peers",
        counter(uploads.blocks_served),
    );
    registry.register(
        "uploaded_bytes",
        "Bytes of blocks and proofs sent to other peers",
        counter(uploads.bytes_uploaded),
    );
    registry.register(
        "transfer_relayed_refused",
        "Block requests refused because they came through a relay for a package larger than max-relayed-download",
        counter(uploads.relayed_refused),
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn calls_are_counted_per_service_and_outcome() {
        let metrics = Metrics::new();
        metrics.call("hello", Ok(1200), Duration::from_micros(300));
        metrics.call("hello", Ok(800), Duration::from_millis(2));
        metrics.call("hello", Err("trap"), Duration::from_millis(1));
        metrics.refused("hello", "busy");
        let text = metrics.render(&Status::default());
        assert_eq!(
            sample(&text, r#"sp2a_calls_total{service="hello",outcome="ok"}"#),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"sp2a_calls_total{service="hello",outcome="trap"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"sp2a_calls_total{service="hello",outcome="busy"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"sp2a_fuel_consumed_total{service="hello"}"#),
            Some(2000.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"sp2a_call_duration_seconds_count{service="hello"}"#
            ),
            Some(3.0)
        );
        assert!(text.ends_with("# EOF\n"), "one end, after both parts");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn pulls_and_the_status_show() {
        let metrics = Metrics::new();
        metrics.pull(
            "ok",
            &[
                ("discovery", Duration::from_millis(3)),
                ("download", Duration::from_millis(20)),
            ],
            2 << 20,
        );
        metrics.pull("not-found", &[], 0);
        metrics.bans().inc();
        metrics.blocks(16, false);
        metrics.blocks(3, true);
        let status = Status {
            provider_records: 7,
            reach: crate::node::ReachStatus {
                reachability: "private".into(),
                relayed: vec!["/ip4/203.0.113.10/tcp/4001/p2p/x/p2p-circuit".into()],
                relaying_circuits_closed: 3,
                ..Default::default()
            },
            connections: vec![crate::node::ConnectionStatus {
                peer: "x".into(),
                remote: "/p2p/y".into(),
                path: "relayed".into(),
                direction: "in".into(),
            }],
            ..Status::default()
        };
        let text = metrics.render(&status);
        assert_eq!(
            sample(&text, r#"sp2a_pulls_total{outcome="ok"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"sp2a_pulls_total{outcome="not-found"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "sp2a_downloaded_bytes_total"),
            Some(2097152.0)
        );
        assert_eq!(sample(&text, "sp2a_peers_banned_total"), Some(1.0));
        assert_eq!(sample(&text, "sp2a_blocks_verified_total"), Some(19.0));
        assert_eq!(sample(&text, "sp2a_blocks_rejected_total"), Some(1.0));
        assert_eq!(sample(&text, "sp2a_provider_records"), Some(7.0));
        assert_eq!(
            sample(&text, r#"sp2a_reachability{state="private"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"sp2a_reachability{state="public"}"#),
            Some(0.0)
        );
        assert_eq!(sample(&text, "sp2a_relay_reservations"), Some(1.0));
        assert_eq!(
            sample(&text, r#"sp2a_connections{path="relayed"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"sp2a_connections{path="direct"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "sp2a_relaying_circuits_closed_total"),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"sp2a_pull_stage_duration_seconds_count{stage="download"}"#
            ),
            Some(1.0)
        );
    }
}
