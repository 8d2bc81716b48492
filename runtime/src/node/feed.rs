//! Live feeds on this node: the feeds the services running here were
//! granted are subscribed to, each on its gossipsub topic
//! ([`protocol::feed_topic`]); every segment is checked against the feed's
//! source key before it is kept ([`Feeds::receive`]) or forwarded, and the
//! buffer the guests read stays bounded.
//!
//! * **Which feeds:** the union of the running services' feed grants and
//!   of those a standby holds for the services it prefetched (the paper's
//!   stream buffer: asked to serve, it has the newest segments already),
//!   kept in step once a second. A feed nobody here reads or holds any
//!   more is left and its buffer dropped.
//! * **Finding the feed:** the source and every node holding the feed
//!   announce themselves under the feed's DHT key
//!   ([`keys::feed_key`]); a node whose feed is quiet looks them up (at
//!   most every [`LOOKUP_EVERY`]) and connects to a few, so gossipsub can
//!   graft it into the feed's mesh. Nodes holding a feed forward it to each
//!   other: the stream buffer spreads with the service.
//! * **Verdicts:** a segment that does not decode, names another feed or is
//!   not signed by the feed's source is rejected (gossipsub then penalises
//!   the peer that sent it, and never forwards it); a duplicate or stale
//!   one is ignored; a new one is accepted, which forwards it.
//! * **Sources:** [`FeedSource`] signs and publishes a feed's segments
//!   (`sp2a feed publish`).
//!
//! A node that joins a feed late gets the segments published from then on,
//! not the earlier ones: viewers of a live feed want the newest.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::services::Services;
use crate::feed::{FeedId, Feeds, Inserted, Segment, SegmentError};
use crate::net::{Client, MessageAcceptance, PeerId, keys, protocol};
use crate::package::SecretKey;

/// How often the subscriptions follow the services' grants.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// A feed without a segment for this long looks for its source ...
const QUIET_AFTER: Duration = Duration::from_secs(3);
/// ... at most this often.
pub const LOOKUP_EVERY: Duration = Duration::from_secs(10);
/// Holders of a feed connected to after a lookup.
const CONNECT_TO: usize = 4;

/// One feed as `sp2a status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedStatus {
    pub name: String,
    pub publisher: String,
    /// Segments held and their bytes.
    pub segments: usize,
    pub bytes: usize,
    pub oldest: Option<u64>,
    pub latest: Option<u64>,
    /// Segments accepted, and refused (bad signature, another feed's,
    /// malformed), since this node subscribed.
    pub accepted: u64,
    pub refused: u64,
}

struct Subscription {
    feed: FeedId,
    last_segment: Option<Instant>,
    last_lookup: Option<Instant>,
    accepted: u64,
    refused: u64,
}

/// The feed role; see the module documentation.
pub(crate) struct FeedRole {
    client: Client,
    services: Arc<Services>,
    feeds: Feeds,
    /// By topic.
    subscribed: Mutex<HashMap<String, Subscription>>,
    /// Feeds held for services this node stands by for, by service.
    held: Mutex<HashMap<String, Vec<FeedId>>>,
}

fn topic_of(feed: &FeedId) -> String {
    protocol::feed_topic(feed.name(), &feed.publisher().to_bytes())
}

impl FeedRole {
    pub(crate) fn new(client: Client, services: Arc<Services>, feeds: Feeds) -> Self {
        Self {
            client,
            services,
            feeds,
            subscribed: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Holds `feeds` for `service`, a service this node stands by for
    /// (replacing what was held for it).
    pub(crate) fn hold(&self, service: &str, feeds: Vec<FeedId>) {
        self.held
            .lock()
            .expect("feed lock")
            .insert(service.to_owned(), feeds);
    }

    /// Whether a gossip topic is a feed's.
    pub(crate) fn handles(topic: &str) -> bool {
        topic.starts_with(protocol::FEED_TOPIC_PREFIX)
    }

    /// Follows the services' grants and looks for quiet feeds' sources
    /// until the node is gone.
    pub(crate) async fn run(this: Weak<Self>) {
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(role) = this.upgrade() else {
                return;
            };
            role.reconcile().await;
            role.look_for_sources().await;
        }
    }

    /// The feeds granted to the services running here, and those held for
    /// standby services.
    fn wanted(&self) -> HashSet<FeedId> {
        let mut wanted: HashSet<FeedId> = self
            .services
            .all()
            .iter()
            .flat_map(|p| p.activation.grants().feeds.clone())
            .filter_map(|grant| FeedId::new(&grant.name, &grant.publisher))
            .collect();
        wanted.extend(
            self.held
                .lock()
                .expect("feed lock")
                .values()
                .flatten()
                .cloned(),
        );
        wanted
    }

    async fn reconcile(&self) {
        let wanted = self.wanted();
        let (join, leave) = {
            let subscribed = self.subscribed.lock().expect("feed lock");
            let join: Vec<FeedId> = wanted
                .iter()
                .filter(|f| !subscribed.contains_key(&topic_of(f)))
                .cloned()
                .collect();
            let leave: Vec<(String, FeedId)> = subscribed
                .iter()
                .filter(|(_, s)| !wanted.contains(&s.feed))
                .map(|(topic, s)| (topic.clone(), s.feed.clone()))
                .collect();
            (join, leave)
        };
        for feed in join {
            let topic = topic_of(&feed);
            tracing::info!(%feed, "subscribing to a live feed");
            self.subscribed.lock().expect("feed lock").insert(
                topic.clone(),
                Subscription {
                    feed: feed.clone(),
                    last_segment: None,
                    last_lookup: None,
                    accepted: 0,
                    refused: 0,
                },
            );
            self.client.subscribe(topic).await;
            self.client
                .start_providing(keys::feed_key(feed.name(), &feed.publisher().to_bytes()))
                .await;
        }
        for (topic, feed) in leave {
            tracing::info!(%feed, "leaving a live feed no service here reads");
            self.subscribed.lock().expect("feed lock").remove(&topic);
            self.client.unsubscribe(topic).await;
            self.client
                .stop_providing(keys::feed_key(feed.name(), &feed.publisher().to_bytes()))
                .await;
            self.feeds.forget(&feed);
        }
    }

    async fn look_for_sources(&self) {
        let now = Instant::now();
        let quiet: Vec<FeedId> = {
            let mut subscribed = self.subscribed.lock().expect("feed lock");
            subscribed
                .values_mut()
                .filter(|s| {
                    s.last_segment
                        .is_none_or(|t| now.duration_since(t) >= QUIET_AFTER)
                        && s.last_lookup
                            .is_none_or(|t| now.duration_since(t) >= LOOKUP_EVERY)
                })
                .map(|s| {
                    s.last_lookup = Some(now);
                    s.feed.clone()
                })
                .collect()
        };
        for feed in quiet {
            let key = keys::feed_key(feed.name(), &feed.publisher().to_bytes());
            let holders = self.client.get_providers_limited(key, CONNECT_TO * 2).await;
            tracing::debug!(%feed, holders = holders.len(), "looked for a quiet feed's holders");
            for peer in holders.into_iter().take(CONNECT_TO) {
                self.client.connect(peer).await;
            }
        }
    }

    /// The verdict on a gossip message on a feed topic.
    pub(crate) fn received(&self, source: PeerId, topic: &str, data: &[u8]) -> MessageAcceptance {
        let Some(feed) = self
            .subscribed
            .lock()
            .expect("feed lock")
            .get(topic)
            .map(|s| s.feed.clone())
        else {
            return MessageAcceptance::Ignore;
        };
        // Decoded and verified without holding the subscriptions.
        let outcome = Segment::decode(data).and_then(|segment| self.feeds.receive(&feed, segment));
        let mut subscribed = self.subscribed.lock().expect("feed lock");
        let subscription = subscribed.get_mut(topic);
        match outcome {
            Ok(Inserted::Kept) => {
                if let Some(s) = subscription {
                    s.accepted += 1;
                    s.last_segment = Some(Instant::now());
                }
                MessageAcceptance::Accept
            }
            Ok(Inserted::Duplicate | Inserted::Stale) => MessageAcceptance::Ignore,
            Err(e) => {
                if let Some(s) = subscription {
                    s.refused += 1;
                }
                tracing::warn!(%feed, %source, error = %e, "refusing a feed segment");
                MessageAcceptance::Reject
            }
        }
    }

    /// The feeds this node holds.
    pub(crate) fn status(&self) -> Vec<FeedStatus> {
        let subscribed = self.subscribed.lock().expect("feed lock");
        let mut out: Vec<FeedStatus> = subscribed
            .values()
            .map(|s| {
                let state = self.feeds.state(&s.feed);
                FeedStatus {
                    name: s.feed.name().to_owned(),
                    publisher: s.feed.publisher().to_string(),
                    segments: state.as_ref().map_or(0, |s| s.segments),
                    bytes: state.as_ref().map_or(0, |s| s.bytes),
                    oldest: state.as_ref().and_then(|s| s.oldest),
                    latest: state.as_ref().and_then(|s| s.latest),
                    accepted: s.accepted,
                    refused: s.refused,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.publisher).cmp(&(&b.name, &b.publisher)));
        out
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A feed's source: numbers, signs and publishes its segments. It
/// announces itself under the feed's DHT key so that the nodes that read
/// the feed find it.
pub struct FeedSource {
    client: Client,
    feeds: Feeds,
    feed: FeedId,
    key: SecretKey,
    next: u64,
}

impl FeedSource {
    pub(crate) async fn start(
        client: Client,
        feeds: Feeds,
        name: &str,
        key: SecretKey,
        first: u64,
    ) -> Result<Self, SegmentError> {
        let feed =
            FeedId::new(name, &key.public()).ok_or_else(|| SegmentError::Name(name.to_owned()))?;
        client
            .start_providing(keys::feed_key(name, &key.public().to_bytes()))
            .await;
        Ok(Self {
            client,
            feeds,
            feed,
            key,
            next: first,
        })
    }

    /// The feed published.
    pub fn feed(&self) -> &FeedId {
        &self.feed
    }

    /// The number the next segment gets.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Signs `data` as the next segment and publishes it; returns its
    /// number. The segment is also kept here, for services on this node.
    pub async fn publish(&mut self, data: Vec<u8>) -> Result<u64, SegmentError> {
        let index = self.next;
        let segment = Segment::sign(&self.key, self.feed.name(), index, now_ms(), data)?;
        let bytes = segment.encode();
        self.feeds.receive(&self.feed, segment)?;
        self.client.publish(topic_of(&self.feed), bytes).await;
        self.next += 1;
        Ok(index)
    }
}
