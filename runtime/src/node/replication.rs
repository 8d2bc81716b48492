//! The replication role: the paper's adaptive diffusion and regression
//! (section 2.4) carried out on a node. For every service it runs whose
//! manifest asks for replication (`<replicas>`), it
//!
//! * publishes this node's load ([`LoadReport`]) on the service's gossipsub
//!   topic every `report_every` and subscribes to the other providers'
//!   reports;
//! * checks every report before gossipsub delivers or forwards it
//!   ([`Replication::received`]): it must decode within its bound and be in
//!   range (else `Reject`), be newer than the last one from its author, not
//!   more than 30 s off this node's clock and not sooner than half a report
//!   period after the last (else `Ignore`), and its author must provide the
//!   service: listed by the last lookup of the service's providers (an
//!   unlisted author's reports are ignored and bring the next lookup
//!   sooner, at most one per 2 s for all authors; unlisted by two lookups,
//!   it is a stranger, refused for [`STRANGER_TTL`]), and serving the
//!   signed advert of the package it reports on, for that service, by the
//!   same publisher (else `Reject`). Advert checks are made at most
//!   [`CHECKS_PER_MINUTE`] times a minute per service and remembered for
//!   [`MEMBER_TTL`]; at most [`MAX_SOURCES`] authors are tracked per service.
//!   Gossipsub itself has checked the author's signature (strict mode).
//! * feeds the reports into the service's [`Controller`], and looks up the
//!   other providers every `refresh` (to connect to them, so the reports
//!   flow), and the standby nodes when it coordinates a group that needs
//!   more providers (at most once per `cooldown`);
//! * carries out the controller's decisions: solicits standbys (each
//!   answer logged) or retires this replica. Every decision is logged with
//!   its reason and emitted as a [`NodeEvent`].
//!
//! A standby that was solicited pulls and activates the service through
//! the ordinary pull; from then on this role runs for it too, so it
//! announces itself and joins the topic without anything more.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::config::ReplicationConfig;
use super::discovery::Discovery;
use super::events::{Events, NodeEvent};
use super::services::{Provided, Services};
use super::upload::Uploads;
use crate::net::protocol::{LoadReport, SolicitRequest, SolicitResponse, load_topic};
use crate::net::{Client, MessageAcceptance, PeerId, keys};
use crate::package::{ContentId, PublisherKey};
use crate::replication::{Action, Controller, Estimate, Load, Params};

/// How long a report's author stays known as a provider once checked.
pub const MEMBER_TTL: Duration = Duration::from_secs(60);
/// How long an author shown not to provide the service is refused without
/// another check (short: a replica that just started may not be findable
/// for a moment).
pub const STRANGER_TTL: Duration = Duration::from_secs(10);
/// Membership checks (a DHT lookup and an advert) per service per minute.
pub const CHECKS_PER_MINUTE: usize = 30;
/// Authors tracked per service.
pub const MAX_SOURCES: usize = 256;
/// Reports further than this from this node's clock are not used.
const MAX_SKEW_MS: u64 = 30_000;
/// How soon an unlisted author's report may bring the next lookup of the
/// providers.
const SOONER_LOOKUP: Duration = Duration::from_secs(2);
/// Providers connected to per service (the others are reached by gossip).
const MAX_CONNECT: usize = 32;

/// The group of one service, as this provider sees it.
struct Group {
    name: String,
    publisher: PublisherKey,
    /// The package this node runs (the newest version here).
    content_id: ContentId,
    controller: Controller<PeerId>,
    /// Authors shown to provide the service: when, and the package checked.
    members: HashMap<PeerId, (Instant, ContentId)>,
    /// Per author: when its last report was taken, and its time stamp.
    last: HashMap<PeerId, (Instant, u64)>,
    /// Membership checks under way, and those started in the last minute.
    checking: HashSet<PeerId>,
    checks: VecDeque<Instant>,
    /// Authors shown not to provide the service, and when: their reports
    /// are refused without another check for [`STRANGER_TTL`].
    strangers: HashMap<PeerId, Instant>,
    /// Authors not among the providers of the last lookup: how many
    /// lookups since their first report have not listed them. Two such
    /// lookups, and they are strangers.
    unlisted: HashMap<PeerId, u32>,
    /// An unlisted author asks for a lookup of the providers sooner.
    lookup_wanted: bool,
    last_lookup: Option<Instant>,
    counts: ReportCounts,
    /// The service's providers at the last lookup.
    providers: HashSet<PeerId>,
    next_refresh: Instant,
    next_standby_lookup: Instant,
    estimate: Option<Estimate>,
    last_decision: Option<String>,
}

/// What became of the reports of other providers a node received.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReportCounts {
    /// Used in the estimate.
    pub taken: u64,
    /// Dropped quietly: replayed, too soon, too far from this node's
    /// clock, beyond the bounds, or while its author was being checked.
    pub ignored: u64,
    /// Refused as invalid: malformed, or its author does not provide the
    /// service.
    pub refused: u64,
    /// Membership checks made: lookups of the providers that unlisted
    /// authors brought sooner, and adverts fetched.
    pub checks: u64,
}

/// What `sp2a status` shows of a service's group.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupStatus {
    /// Providers with fresh reports (this node included).
    pub providers: u32,
    /// The load in providers' worth of capacity.
    pub load: f64,
    /// Providers the load needs at the target utilisation.
    pub needed: u32,
    /// Some provider misses the latency target or turns callers away.
    pub violated: bool,
    /// The last decision this node took, with its reason.
    pub last_decision: Option<String>,
    /// The other providers' reports, since this node joined the group.
    pub reports: ReportCounts,
}

/// Why a report is not used.
#[derive(Debug, PartialEq)]
enum Verdict {
    Take(LoadReport),
    /// Not for us now (stale, too soon, unknown topic): dropped quietly.
    Ignore(&'static str),
    /// Invalid: dropped, and its relay penalised.
    Reject(String),
    /// By an author shown not to provide the service (lately).
    Stranger,
    /// Its author must be shown to provide the service first.
    Check(LoadReport),
}

pub(crate) struct Replication {
    me: PeerId,
    client: Client,
    services: Arc<Services>,
    discovery: Arc<Discovery>,
    uploads: Arc<Uploads>,
    events: Events,
    config: ReplicationConfig,
    /// By topic.
    groups: Mutex<HashMap<String, Group>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load_of(report: &LoadReport) -> Load {
    Load {
        calls_per_s: f64::from(report.calls_per_s),
        in_flight: f64::from(report.in_flight),
        limit: report.limit,
        busy_per_s: f64::from(report.busy_per_s),
        p95: Duration::from_micros(report.p95_us),
        upload: f64::from(report.upload),
        pinned: report.pinned,
    }
}

impl Group {
    /// The checks a report passes before its author's membership matters.
    fn screen(
        &mut self,
        me: PeerId,
        source: PeerId,
        data: &[u8],
        now: Instant,
        now_ms: u64,
        gap: Duration,
    ) -> Verdict {
        if source == me {
            return Verdict::Ignore("this node's own report");
        }
        let report = match LoadReport::decode(data) {
            Ok(report) => report,
            Err(e) => return Verdict::Reject(e),
        };
        if report.at_ms > now_ms + MAX_SKEW_MS || report.at_ms + MAX_SKEW_MS < now_ms {
            return Verdict::Ignore("its time stamp is too far from this node's clock");
        }
        match self.last.get(&source) {
            Some((_, at_ms)) if *at_ms >= report.at_ms => {
                return Verdict::Ignore("not newer than the last report of its author");
            }
            Some((taken, _)) if now.saturating_duration_since(*taken) < gap => {
                return Verdict::Ignore("sooner than its author may report");
            }
            None if self.last.len() >= MAX_SOURCES => {
                self.last
                    .retain(|_, (taken, _)| now.saturating_duration_since(*taken) < MEMBER_TTL);
                if self.last.len() >= MAX_SOURCES {
                    return Verdict::Ignore("too many authors on this topic");
                }
            }
            _ => {}
        }
        if self
            .strangers
            .get(&source)
            .is_some_and(|at| now.saturating_duration_since(*at) < STRANGER_TTL)
        {
            return Verdict::Stranger;
        }
        let member = self.members.get(&source).is_some_and(|(at, id)| {
            now.saturating_duration_since(*at) < MEMBER_TTL && id.0 == report.content_id
        });
        if member {
            Verdict::Take(report)
        } else {
            Verdict::Check(report)
        }
    }

    /// Whether a membership check of `source` may start now (and counts it).
    fn may_check(&mut self, source: PeerId, now: Instant) -> bool {
        while self
            .checks
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.checks.pop_front();
        }
        if self.checking.contains(&source) || self.checks.len() >= CHECKS_PER_MINUTE {
            return false;
        }
        self.checking.insert(source);
        self.checks.push_back(now);
        self.counts.checks += 1;
        true
    }

    /// Remembers that `source` does not provide the service (bounded).
    fn stranger(&mut self, source: PeerId, now: Instant) {
        if self.strangers.len() >= MAX_SOURCES {
            self.strangers
                .retain(|_, at| now.saturating_duration_since(*at) < STRANGER_TTL);
            if self.strangers.len() >= MAX_SOURCES {
                return;
            }
        }
        self.strangers.insert(source, now);
    }

    /// Counts a verdict.
    fn count(&mut self, verdict: MessageAcceptance) -> MessageAcceptance {
        match verdict {
            MessageAcceptance::Accept => self.counts.taken += 1,
            MessageAcceptance::Ignore => self.counts.ignored += 1,
            MessageAcceptance::Reject => self.counts.refused += 1,
        }
        verdict
    }

    fn take(&mut self, source: PeerId, report: &LoadReport, now: Instant) {
        self.last.insert(source, (now, report.at_ms));
        self.controller.report(now, source, load_of(report));
    }
}

impl Replication {
    pub(crate) fn new(
        client: Client,
        services: Arc<Services>,
        discovery: Arc<Discovery>,
        uploads: Arc<Uploads>,
        events: Events,
        config: ReplicationConfig,
    ) -> Self {
        Self {
            me: client.peer_id(),
            client,
            services,
            discovery,
            uploads,
            events,
            config,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// Runs the role until the node is gone.
    pub(crate) async fn run(role: Weak<Replication>) {
        let every = match role.upgrade() {
            Some(role) => role.config.report_every,
            None => return,
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(role) = role.upgrade() else {
                return;
            };
            role.step(Instant::now()).await;
        }
    }

    /// The group of `provided`'s service, as `sp2a status` shows it.
    pub(crate) fn status(&self, provided: &Provided) -> Option<GroupStatus> {
        let topic = topic_of(provided);
        let groups = self.groups.lock().expect("groups lock");
        let group = groups.get(&topic)?;
        let estimate = group.estimate.as_ref()?;
        Some(GroupStatus {
            providers: estimate.providers,
            load: estimate.load,
            needed: estimate.needed,
            violated: estimate.violated,
            last_decision: group.last_decision.clone(),
            reports: group.counts,
        })
    }

    /// One round: groups follow the services running here; each publishes
    /// and takes this node's report, looks up providers and standbys when
    /// due, and carries out its controller's decisions.
    async fn step(self: &Arc<Self>, now: Instant) {
        let (joined, left) = self.sync_groups(now);
        for topic in left {
            self.client.unsubscribe(topic).await;
        }
        for topic in joined {
            self.client.subscribe(topic).await;
        }
        let mut publish = Vec::new();
        let mut refresh = Vec::new();
        let mut actions = Vec::new();
        {
            let mut groups = self.groups.lock().expect("groups lock");
            for (topic, group) in groups.iter_mut() {
                let Some(provided) = self.services.by_id(&group.content_id) else {
                    continue;
                };
                let report = own_report(&provided, self.uploads.utilisation());
                group.controller.report(now, self.me, load_of(&report));
                publish.push((topic.clone(), report.encode()));
                let asked_sooner = group.lookup_wanted
                    && group
                        .last_lookup
                        .is_none_or(|at| now.saturating_duration_since(at) >= SOONER_LOOKUP);
                let providers_due = now >= group.next_refresh || asked_sooner;
                let standbys_due =
                    now >= group.next_standby_lookup && group.controller.wants_standbys(now);
                if providers_due {
                    group.next_refresh = now + self.config.refresh;
                    group.lookup_wanted = false;
                    group.last_lookup = Some(now);
                }
                if standbys_due {
                    group.next_standby_lookup =
                        now + self.config.cooldown.max(Duration::from_secs(1));
                }
                if providers_due || standbys_due {
                    refresh.push((
                        topic.clone(),
                        group.name.clone(),
                        providers_due,
                        standbys_due,
                    ));
                }
                while let Some(action) = group.controller.poll(now) {
                    let decision = match &action {
                        Action::Solicit { standbys, reason } => {
                            format!(
                                "diffusion: asking {} standby node(s) to pull: {reason}",
                                standbys.len()
                            )
                        }
                        Action::Retire { reason } => format!("regression: retiring: {reason}"),
                    };
                    tracing::info!(service = %group.name, "{decision}");
                    group.last_decision = Some(decision);
                    actions.push((
                        group.name.clone(),
                        group.publisher,
                        group.content_id,
                        action,
                    ));
                }
                group.estimate = Some(group.controller.estimate(now));
            }
        }
        for (topic, data) in publish {
            self.client.publish(topic, data).await;
        }
        for (topic, name, providers, standbys) in refresh {
            let role = self.clone();
            tokio::spawn(async move { role.refresh(topic, name, providers, standbys).await });
        }
        for (name, publisher, content_id, action) in actions {
            let role = self.clone();
            tokio::spawn(async move { role.carry_out(name, publisher, content_id, action).await });
        }
    }

    /// Makes the groups follow the services running here; returns the
    /// topics joined and left.
    fn sync_groups(&self, now: Instant) -> (Vec<String>, Vec<String>) {
        let mut wanted: HashMap<String, Arc<Provided>> = HashMap::new();
        for provided in self.services.all() {
            if self
                .services
                .policy()
                .replication(provided.package.manifest())
                .is_none()
            {
                continue;
            }
            let topic = topic_of(&provided);
            let newer = wanted.get(&topic).is_none_or(|other| {
                provided.package.manifest().version > other.package.manifest().version
            });
            if newer {
                wanted.insert(topic, provided);
            }
        }
        let mut groups = self.groups.lock().expect("groups lock");
        let left: Vec<String> = groups
            .keys()
            .filter(|t| !wanted.contains_key(*t))
            .cloned()
            .collect();
        for topic in &left {
            groups.remove(topic);
        }
        let mut joined = Vec::new();
        for (topic, provided) in wanted {
            if let Some(group) = groups.get_mut(&topic) {
                group.content_id = provided.package.content_id();
                continue;
            }
            let manifest = provided.package.manifest();
            let replication = self
                .services
                .policy()
                .replication(manifest)
                .expect("filtered above");
            let mut params = Params::from_manifest(&replication);
            params.report_ttl = self.config.report_ttl;
            params.hold = self.config.hold;
            params.cooldown = self.config.cooldown;
            tracing::info!(
                service = %manifest.name,
                min = params.min_replicas,
                max = params.max_replicas,
                utilisation = params.utilisation,
                latency_ms = params.latency.as_millis() as u64,
                "joining the service's load group"
            );
            groups.insert(
                topic.clone(),
                Group {
                    name: manifest.name.clone(),
                    publisher: provided.package.advert().publisher(),
                    content_id: provided.package.content_id(),
                    controller: Controller::new(params, self.me),
                    members: HashMap::new(),
                    last: HashMap::new(),
                    checking: HashSet::new(),
                    checks: VecDeque::new(),
                    strangers: HashMap::new(),
                    unlisted: HashMap::new(),
                    lookup_wanted: false,
                    last_lookup: None,
                    counts: ReportCounts::default(),
                    providers: HashSet::new(),
                    next_refresh: now,
                    next_standby_lookup: now,
                    estimate: None,
                    last_decision: None,
                },
            );
            joined.push(topic);
        }
        (joined, left)
    }

    /// Looks up the service's providers (and connects to them, so that
    /// reports flow), its standby nodes, or both.
    async fn refresh(&self, topic: String, name: String, providers: bool, standbys: bool) {
        let providers = if providers {
            let found = self
                .client
                .get_all_providers(keys::service_key(&name))
                .await;
            for &peer in found.iter().filter(|p| **p != self.me).take(MAX_CONNECT) {
                self.client.connect(peer).await;
            }
            Some(found)
        } else {
            None
        };
        let standbys = if standbys {
            Some(
                self.client
                    .get_all_providers(keys::standby_key(&name))
                    .await,
            )
        } else {
            None
        };
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get_mut(&topic) else {
            return;
        };
        if let Some(found) = providers {
            // Authors this lookup did not list either: twice, and they are
            // strangers.
            let now = Instant::now();
            let mut strangers = Vec::new();
            group.unlisted.retain(|author, lookups| {
                if found.contains(author) {
                    return false;
                }
                *lookups += 1;
                if *lookups >= 2 {
                    strangers.push(*author);
                    return false;
                }
                true
            });
            for author in strangers {
                tracing::info!(%author, service = %name, "load reports refused: their author does not provide the service");
                group.stranger(author, now);
            }
            group.lookup_wanted |= !group.unlisted.is_empty();
            group.providers = found;
        }
        if let Some(found) = standbys {
            let mut standbys: Vec<PeerId> = found
                .into_iter()
                .filter(|p| *p != self.me && !group.providers.contains(p))
                .collect();
            standbys.sort();
            group.controller.standbys(standbys);
        }
    }

    /// A gossip message on one of this node's topics, by `source`, from
    /// `via`: the verdict that decides whether gossipsub delivers and
    /// forwards it (and whether it penalises `via`).
    pub(crate) async fn received(
        &self,
        source: PeerId,
        via: PeerId,
        topic: &str,
        data: &[u8],
    ) -> MessageAcceptance {
        // A report whose author this node does not take for a provider is
        // invalid in this node's view only: rejected (and its sender
        // penalised) when the author sent it, ignored when another peer,
        // whose lookups may list the author, relayed it.
        let not_a_provider = match source == via {
            true => MessageAcceptance::Reject,
            false => MessageAcceptance::Ignore,
        };
        let now = Instant::now();
        let gap = self.config.report_every / 2;
        let (report, name, publisher) = {
            let mut groups = self.groups.lock().expect("groups lock");
            let Some(group) = groups.get_mut(topic) else {
                return MessageAcceptance::Ignore;
            };
            let report = match group.screen(self.me, source, data, now, now_ms(), gap) {
                Verdict::Take(report) => {
                    group.take(source, &report, now);
                    return group.count(MessageAcceptance::Accept);
                }
                Verdict::Ignore(why) => {
                    tracing::trace!(%source, service = %group.name, why, "load report not used");
                    return group.count(MessageAcceptance::Ignore);
                }
                Verdict::Reject(why) => {
                    tracing::debug!(%source, service = %group.name, %why, "load report refused");
                    return group.count(MessageAcceptance::Reject);
                }
                Verdict::Stranger => {
                    tracing::debug!(%source, service = %group.name, "load report refused: its author was shown not to provide the service");
                    return group.count(not_a_provider);
                }
                // Not among the providers of the last lookup (a replica that
                // just started, or a stranger): a lookup of all the providers
                // comes sooner, at most one per SOONER_LOOKUP whatever the
                // number of authors; their reports wait for it.
                Verdict::Check(_) if !group.providers.contains(&source) => {
                    if !group.unlisted.contains_key(&source) && group.unlisted.len() < MAX_SOURCES {
                        group.unlisted.insert(source, 0);
                        group.counts.checks += 1;
                    }
                    group.lookup_wanted = true;
                    return group.count(MessageAcceptance::Ignore);
                }
                Verdict::Check(report) if group.may_check(source, now) => report,
                Verdict::Check(_) => return group.count(MessageAcceptance::Ignore),
            };
            (report, group.name.clone(), group.publisher)
        };
        let shown = self.provides(source, &name, &publisher, &report).await;
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get_mut(topic) else {
            return MessageAcceptance::Ignore;
        };
        group.checking.remove(&source);
        if let Err(why) = shown {
            tracing::info!(%source, service = %name, %why, "load report refused: its author does not provide the service");
            group.stranger(source, now);
            return group.count(not_a_provider);
        }
        if group.members.len() >= MAX_SOURCES {
            group
                .members
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < MEMBER_TTL);
        }
        if group.members.len() >= MAX_SOURCES {
            return group.count(MessageAcceptance::Ignore);
        }
        group
            .members
            .insert(source, (now, ContentId(report.content_id)));
        group.strangers.remove(&source);
        // Another report of the same author may have been taken meanwhile.
        if group
            .last
            .get(&source)
            .is_some_and(|(_, at)| *at >= report.at_ms)
        {
            return group.count(MessageAcceptance::Ignore);
        }
        group.take(source, &report, now);
        group.count(MessageAcceptance::Accept)
    }

    /// Whether `source`, listed as a provider of the service, serves the
    /// signed advert of the package it reports on, for this service and
    /// publisher.
    async fn provides(
        &self,
        source: PeerId,
        name: &str,
        publisher: &PublisherKey,
        report: &LoadReport,
    ) -> Result<(), String> {
        let id = ContentId(report.content_id);
        let lookup = self
            .discovery
            .advert_from(source, id, |advert| advert.manifest().name == name)
            .await;
        match lookup.found.first() {
            Some(found) if found.advert.publisher() == *publisher => Ok(()),
            Some(_) => Err("its package is by another publisher".into()),
            None => Err(format!(
                "it serves no valid advert of package {}",
                id.short()
            )),
        }
    }

    /// Carries out a decision of the controller.
    async fn carry_out(
        &self,
        name: String,
        publisher: PublisherKey,
        content_id: ContentId,
        action: Action<PeerId>,
    ) {
        match action {
            Action::Solicit { standbys, reason } => {
                self.events.emit(NodeEvent::Diffusion {
                    service: name.clone(),
                    standbys: standbys.clone(),
                    reason,
                });
                for standby in standbys {
                    let request = SolicitRequest {
                        service: name.clone(),
                        content_id: content_id.0,
                    };
                    match self.client.request_solicit(standby, request).await {
                        Ok(SolicitResponse::Accepted) => {
                            tracing::info!(service = %name, %standby, "standby accepted: it is pulling")
                        }
                        Ok(other) => {
                            tracing::info!(service = %name, %standby, answer = ?other, "standby declined")
                        }
                        Err(e) => {
                            tracing::info!(service = %name, %standby, error = %e, "standby did not answer")
                        }
                    }
                }
            }
            Action::Retire { reason } => {
                let target = format!("{name}@{publisher}");
                match self.services.retire(&target).await {
                    Ok(_) => self.events.emit(NodeEvent::Regression {
                        service: name,
                        reason,
                    }),
                    Err(e) => tracing::warn!(service = %name, error = %e, "cannot retire"),
                }
            }
        }
    }
}

/// The load topic of a running service.
fn topic_of(provided: &Provided) -> String {
    load_topic(
        &provided.package.manifest().name,
        &provided.package.advert().publisher().to_bytes(),
    )
}

/// This node's report on a service it runs, over the last second, with
/// the utilisation of its uplink (shared by its services: a provider whose
/// uplink is full is as busy as one whose slots are).
fn own_report(provided: &Provided, upload: f64) -> LoadReport {
    let load = provided.load(1);
    let limit = provided.limit() as u32;
    LoadReport {
        content_id: provided.package.content_id().0,
        at_ms: now_ms(),
        calls_per_s: load.calls_per_s as f32,
        // The average over the second, not the instant: smoother, and what
        // capacity is about.
        in_flight: (load.concurrency.round() as u32).min(limit),
        limit,
        busy_per_s: load.busy_per_s as f32,
        p95_us: load.p95.map(|d| d.as_micros() as u64).unwrap_or(0),
        upload: upload.clamp(0.0, 1.0) as f32,
        pinned: provided.pinned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Params;

    fn group() -> Group {
        let params = Params {
            latency: Duration::from_millis(500),
            utilisation: 0.7,
            min_replicas: 1,
            max_replicas: 8,
            report_ttl: Duration::from_secs(3),
            hold: Duration::from_secs(30),
            cooldown: Duration::from_secs(5),
            ask_again_after: Duration::from_secs(60),
        };
        Group {
            name: "echo".into(),
            publisher: crate::package::SecretKey::generate().public(),
            content_id: ContentId([1; 32]),
            controller: Controller::new(params, PeerId::random()),
            members: HashMap::new(),
            last: HashMap::new(),
            checking: HashSet::new(),
            checks: VecDeque::new(),
            strangers: HashMap::new(),
            unlisted: HashMap::new(),
            lookup_wanted: false,
            last_lookup: None,
            counts: ReportCounts::default(),
            providers: HashSet::new(),
            next_refresh: Instant::now(),
            next_standby_lookup: Instant::now(),
            estimate: None,
            last_decision: None,
        }
    }

    fn report(at_ms: u64) -> LoadReport {
        LoadReport {
            content_id: [1; 32],
            at_ms,
            calls_per_s: 10.0,
            in_flight: 1,
            limit: 4,
            busy_per_s: 0.0,
            p95_us: 1000,
            upload: 0.0,
            pinned: false,
        }
    }

    const GAP: Duration = Duration::from_millis(500);

    #[test]
    fn a_report_is_checked_once_then_taken_while_its_author_is_a_member() {
        let mut g = group();
        let me = PeerId::random();
        let author = PeerId::random();
        let t0 = Instant::now();
        let ms = 1_800_000_000_000;
        let first = report(ms).encode();
        assert!(matches!(
            g.screen(me, author, &first, t0, ms, GAP),
            Verdict::Check(_)
        ));
        g.members.insert(author, (t0, ContentId([1; 32])));
        let Verdict::Take(r) = g.screen(me, author, &first, t0, ms, GAP) else {
            panic!("a member's report is taken");
        };
        g.take(author, &r, t0);
        // Another package than the one checked: checked again.
        let mut other = report(ms + 1000);
        other.content_id = [2; 32];
        let t1 = t0 + Duration::from_secs(1);
        assert!(matches!(
            g.screen(me, author, &other.encode(), t1, ms + 1000, GAP),
            Verdict::Check(_)
        ));
        // Membership expires.
        let late = t0 + MEMBER_TTL;
        let newer = report(ms + 60_000).encode();
        assert!(matches!(
            g.screen(me, author, &newer, late, ms + 60_000, GAP),
            Verdict::Check(_)
        ));
    }

    #[test]
    fn replays_floods_skewed_and_malformed_reports_are_not_used() {
        let mut g = group();
        let me = PeerId::random();
        let author = PeerId::random();
        let t0 = Instant::now();
        let ms = 1_800_000_000_000;
        g.members.insert(author, (t0, ContentId([1; 32])));
        g.take(author, &report(ms), t0);
        let at = |dt: u64| t0 + Duration::from_millis(dt);
        // The same report again (a replay), or an older one.
        assert!(matches!(
            g.screen(me, author, &report(ms).encode(), at(1000), ms + 1000, GAP),
            Verdict::Ignore(_)
        ));
        assert!(matches!(
            g.screen(
                me,
                author,
                &report(ms - 5).encode(),
                at(1000),
                ms + 1000,
                GAP
            ),
            Verdict::Ignore(_)
        ));
        // Newer, but sooner than half a period after the last.
        assert!(matches!(
            g.screen(
                me,
                author,
                &report(ms + 100).encode(),
                at(100),
                ms + 100,
                GAP
            ),
            Verdict::Ignore(_)
        ));
        // From the future, or long ago.
        assert!(matches!(
            g.screen(
                me,
                author,
                &report(ms + 60_000).encode(),
                at(1000),
                ms + 1000,
                GAP
            ),
            Verdict::Ignore(_)
        ));
        let stranger = PeerId::random();
        assert!(matches!(
            g.screen(
                me,
                stranger,
                &report(ms - 60_000).encode(),
                at(1000),
                ms,
                GAP
            ),
            Verdict::Ignore(_)
        ));
        // An author a check showed not to provide the service: refused
        // without another check, until that result is old.
        let liar = PeerId::random();
        g.stranger(liar, t0);
        assert!(matches!(
            g.screen(
                me,
                liar,
                &report(ms + 1000).encode(),
                at(1000),
                ms + 1000,
                GAP
            ),
            Verdict::Stranger
        ));
        let later = t0 + STRANGER_TTL;
        assert!(matches!(
            g.screen(
                me,
                liar,
                &report(ms + 10_000).encode(),
                later,
                ms + 10_000,
                GAP
            ),
            Verdict::Check(_)
        ));
        // Malformed: rejected.
        assert!(matches!(
            g.screen(me, author, b"junk", at(1000), ms + 1000, GAP),
            Verdict::Reject(_)
        ));
        // This node's own report, relayed back: ignored.
        assert!(matches!(
            g.screen(
                me,
                me,
                &report(ms + 1000).encode(),
                at(1000),
                ms + 1000,
                GAP
            ),
            Verdict::Ignore(_)
        ));
    }

    #[test]
    fn membership_checks_are_bounded_per_minute_and_authors_per_topic() {
        let mut g = group();
        let t0 = Instant::now();
        let checked = (0..100)
            .filter(|_| g.may_check(PeerId::random(), t0))
            .count();
        assert_eq!(checked, CHECKS_PER_MINUTE);
        let someone = PeerId::random();
        assert!(g.may_check(someone, t0 + Duration::from_secs(60)));
        assert!(
            !g.may_check(someone, t0 + Duration::from_secs(61)),
            "one check per author at a time"
        );
        // Beyond MAX_SOURCES authors, new ones are not tracked.
        let ms = 1_800_000_000_000;
        for _ in 0..MAX_SOURCES {
            g.last.insert(PeerId::random(), (t0, ms));
        }
        let newcomer = PeerId::random();
        assert!(matches!(
            g.screen(
                PeerId::random(),
                newcomer,
                &report(ms).encode(),
                t0,
                ms,
                GAP
            ),
            Verdict::Ignore(_)
        ));
    }
}
