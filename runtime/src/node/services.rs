//! The services this node runs: each activated ([`activate`]), kept in the
//! crash-safe store, and announced in the DHT under its service name and
//! its content id; looked up by name or by package.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bao_tree::io::outboard::PreOrderMemOutboard;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::events::{Events, NodeEvent};
use super::load::{LoadMeter, LoadSnapshot};
use super::per_peer::{Held, PerPeer};
use super::store::Store;
use super::{NodeError, activate};
use crate::blocks;
use crate::net::{Client, PeerId, keys};
use crate::package::{ContentId, Package, VerifiedPackage};
use crate::policy::Policy;
use crate::sandbox::{Activation, Sandbox};

/// A service this node runs and provides.
pub struct Provided {
    pub package: VerifiedPackage,
    pub activation: Activation,
    /// The component's hash tree, for serving verified blocks.
    pub outboard: PreOrderMemOutboard,
    /// The paper's limit L: concurrent invocations served.
    invocations: Arc<Semaphore>,
    /// L itself.
    limit: usize,
    /// Invocations each remote peer has running (fair share).
    per_peer: PerPeer,
    /// Calls answered and callers turned away, over the last seconds.
    load: Mutex<LoadMeter>,
    /// Its operator shared it here (it never retires).
    pinned: std::sync::atomic::AtomicBool,
    pub shared_at: Instant,
}

/// One of a service's invocation slots held for a remote peer; gives both
/// back when dropped.
pub(crate) struct PeerSlot {
    _place: Held,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Provided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provided")
            .field("name", &self.package.manifest().name)
            .field("content_id", &self.package.content_id())
            .finish()
    }
}

impl Provided {
    /// A call (local or remote) was answered after `latency`.
    pub(crate) fn answered(&self, latency: Duration) {
        let mut load = self.load.lock().expect("load lock");
        load.answered(Instant::now(), latency);
    }

    /// A remote caller was turned away (`Busy`).
    pub(crate) fn turned_away(&self) {
        self.load.lock().expect("load lock").busy(Instant::now());
    }

    /// The load over the last `seconds` whole seconds.
    pub fn load(&self, seconds: usize) -> LoadSnapshot {
        let load = self.load.lock().expect("load lock");
        load.snapshot(Instant::now(), seconds)
    }

    /// Whether its operator shared it here (`--share`, `sp2a share`): a
    /// pinned service never retires.
    pub fn pinned(&self) -> bool {
        self.pinned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The paper's limit L of this service here.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Invocations running now.
    pub fn busy_invocations(&self, limit: usize) -> usize {
        limit
            .max(1)
            .saturating_sub(self.invocations.available_permits())
    }

    /// Waits for one of the service's invocation slots.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        self.invocations
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Whether every one of the service's invocation slots is taken.
    pub(crate) fn at_limit(&self) -> bool {
        self.invocations.available_permits() == 0
    }

    /// One of the service's invocation slots for remote `peer`, if one is
    /// free now and the peer holds fewer than its share: half of L (at least
    /// one). A peer that floods a service with calls therefore leaves the
    /// other half of L to everyone else.
    pub(crate) fn try_slot_for(&self, peer: PeerId) -> Option<PeerSlot> {
        let share = (self.limit / 2).max(1);
        let invocations = &self.invocations;
        let (place, permit) = self
            .per_peer
            .take(peer, share, || invocations.clone().try_acquire_owned().ok())?;
        Some(PeerSlot {
            _place: place,
            _permit: permit,
        })
    }
}

pub(crate) struct Services {
    sandbox: Sandbox,
    policy: Policy,
    store: Store,
    client: Client,
    events: Events,
    max_invocations: usize,
    running: RwLock<BTreeMap<ContentId, Arc<Provided>>>,
}

/// Whether `spec` can name a publisher: its key text, or 8 to 64 leading
/// hex digits of its key (with or without the `ed25519:` prefix).
pub(crate) fn is_publisher_spec(spec: &str) -> bool {
    let hex = spec.strip_prefix("ed25519:").unwrap_or(spec);
    (8..=64).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `spec` (see [`is_publisher_spec`]) names `key`.
pub(crate) fn publisher_matches(key: &crate::package::PublisherKey, spec: &str) -> bool {
    let text = key.to_string();
    let hex = text.trim_start_matches("ed25519:");
    let spec = spec.trim_start_matches("ed25519:").to_ascii_lowercase();
    is_publisher_spec(&spec) && hex.starts_with(&spec)
}

impl Services {
    pub(crate) fn new(
        sandbox: Sandbox,
        policy: Policy,
        store: Store,
        client: Client,
        events: Events,
        max_invocations: usize,
    ) -> Self {
        Self {
            sandbox,
            policy,
            store,
            client,
            events,
            max_invocations: max_invocations.max(1),
            running: RwLock::new(BTreeMap::new()),
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Re-activates (and, if `announce`, re-announces) every stored package;
    /// those the policy no longer accepts or that fail to verify are logged
    /// and left alone.
    pub(crate) async fn restore(&self, announce: bool) -> Result<(), NodeError> {
        for stored in self.store.load_all()? {
            match stored {
                Ok(package) => {
                    let name = package.manifest().name.clone();
                    let id = package.content_id();
                    match self.run(package.into_inner(), announce).await {
                        Ok(_) if self.store.pinned(&id) => self.pin(&id)?,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(service = %name, error = %e, "not restoring a stored package")
                        }
                    }
                }
                Err((path, e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged stored package")
                }
            }
        }
        Ok(())
    }

    /// Activates a package (admission, verification, compile, audit,
    /// self-test), stores it and, if `announce`, announces this node as
    /// its provider. A package already running is left as it is.
    pub(crate) async fn run(
        &self,
        package: Package,
        announce: bool,
    ) -> Result<ContentId, NodeError> {
        let id = package.content_id();
        if self.by_id(&id).is_some() {
            return Ok(id);
        }
        let service = activate(&self.sandbox, &self.policy, package).await?;
        let package = service.package;
        self.store.save(&package)?;
        let component = package.component_bytes();
        let outboard = tokio::task::spawn_blocking(move || blocks::outboard(&component))
            .await
            .map_err(|e| NodeError::Internal(format!("hashing the component failed: {e}")))?;
        let name = package.manifest().name.clone();
        let version = package.manifest().version.to_string();
        let provided = Arc::new(Provided {
            package,
            activation: service.activation,
            outboard,
            invocations: Arc::new(Semaphore::new(self.max_invocations)),
            limit: self.max_invocations,
            per_peer: PerPeer::default(),
            load: Mutex::new(LoadMeter::new(Instant::now())),
            pinned: std::sync::atomic::AtomicBool::new(false),
            shared_at: Instant::now(),
        });
        self.running
            .write()
            .expect("services lock")
            .insert(id, provided);
        if !announce {
            tracing::info!(service = %name, %version, package = %id.short(), "active (not re-shared)");
            return Ok(id);
        }
        self.client.start_providing(keys::service_key(&name)).await;
        self.client.start_providing(keys::package_key(&id.0)).await;
        tracing::info!(service = %name, %version, package = %id.short(), "providing");
        self.events.emit(NodeEvent::Shared {
            name,
            version,
            content_id: id,
        });
        Ok(id)
    }

    /// Every service running.
    pub(crate) fn all(&self) -> Vec<Arc<Provided>> {
        self.running
            .read()
            .expect("services lock")
            .values()
            .cloned()
            .collect()
    }

    /// The service `target` means here: `name` or `name@publisher` (the
    /// publisher's key text, or at least 8 leading hex digits of its key),
    /// the newest version of it. A name that services of several publishers
    /// share is ambiguous unless the target or the policy (`[pin]`) says
    /// which publisher it means.
    pub(crate) fn resolve(&self, target: &str) -> Result<Arc<Provided>, NodeError> {
        let (name, publisher) = match target.split_once('@') {
            Some((name, publisher)) => (name, Some(publisher)),
            None => (target, None),
        };
        let pinned = self.policy.pins.get(name);
        let running = self.running.read().expect("services lock");
        let candidates: Vec<&Arc<Provided>> = running
            .values()
            .filter(|p| p.package.manifest().name == name)
            .filter(|p| {
                let key = p.package.advert().publisher();
                match publisher {
                    Some(spec) => publisher_matches(&key, spec),
                    None => pinned.is_none_or(|pin| *pin == key),
                }
            })
            .collect();
        let mut publishers: Vec<String> = candidates
            .iter()
            .map(|p| p.package.advert().publisher().to_string())
            .collect();
        publishers.sort();
        publishers.dedup();
        if publishers.len() > 1 {
            return Err(NodeError::Ambiguous {
                name: name.to_owned(),
                publishers,
            });
        }
        candidates
            .into_iter()
            .max_by(|a, b| {
                a.package
                    .manifest()
                    .version
                    .cmp(&b.package.manifest().version)
            })
            .cloned()
            .ok_or_else(|| NodeError::NotRunning(target.to_owned()))
    }

    /// Retires the service `target` means here (see `Node::retire`).
    pub(crate) async fn retire(&self, target: &str) -> Result<ContentId, NodeError> {
        let provided = self.resolve(target)?;
        let name = provided.package.manifest().name.clone();
        if provided.pinned() {
            return Err(NodeError::Pinned(name));
        }
        let id = provided.package.content_id();
        self.store.retire(&id)?;
        // Calls in flight hold their own reference and finish.
        self.running.write().expect("services lock").remove(&id);
        self.client.stop_providing(keys::package_key(&id.0)).await;
        let others = self
            .running
            .read()
            .expect("services lock")
            .values()
            .any(|p| p.package.manifest().name == name);
        if !others {
            self.client.stop_providing(keys::service_key(&name)).await;
        }
        tracing::info!(service = %name, package = %id.short(), "retired: records withdrawn, package kept");
        Ok(id)
    }

    /// Keeps a verified package without running it (see `Store::keep`).
    pub(crate) fn keep(&self, package: &VerifiedPackage) -> Result<(), NodeError> {
        self.store.keep(package)?;
        Ok(())
    }

    /// A package this node retired or prefetched and kept, verified again.
    pub(crate) fn retired(&self, id: &ContentId) -> Option<VerifiedPackage> {
        self.store.retired(id)
    }

    /// Marks the service `id` as pinned by its operator, here and in the
    /// store (it stays pinned after a restart).
    pub(crate) fn pin(&self, id: &ContentId) -> Result<(), NodeError> {
        self.store.pin(id)?;
        if let Some(provided) = self.by_id(id) {
            provided
                .pinned
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The versions of `name` running here.
    pub(crate) fn versions(&self, name: &str, max: usize) -> Vec<Arc<Provided>> {
        self.running
            .read()
            .expect("services lock")
            .values()
            .filter(|p| p.package.manifest().name == name)
            .take(max)
            .cloned()
            .collect()
    }

    /// The package `id`, if it runs here.
    pub(crate) fn by_id(&self, id: &ContentId) -> Option<Arc<Provided>> {
        self.running.read().expect("services lock").get(id).cloned()
    }

    /// Invocation slots of each service (the paper's L).
    pub(crate) fn max_invocations(&self) -> usize {
        self.max_invocations
    }

    /// Withdraws every provider record of the services running here.
    pub(crate) async fn withdraw(&self) {
        let mut names = HashSet::new();
        for provided in self.all() {
            names.insert(provided.package.manifest().name.clone());
            self.client
                .stop_providing(keys::package_key(&provided.package.content_id().0))
                .await;
        }
        for name in names {
            self.client.stop_providing(keys::service_key(&name)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_is_named_by_its_key_or_a_hex_prefix_and_nothing_else() {
        let key = crate::package::SecretKey::generate().public();
        let text = key.to_string();
        let hex = &text["ed25519:".len()..];
        for spec in [
            text.as_str(),
            hex,
            &hex[..8],
            &hex[..12].to_ascii_uppercase(),
        ] {
            assert!(is_publisher_spec(spec), "{spec}");
            assert!(publisher_matches(&key, spec), "{spec}");
        }
        let other = if hex.starts_with('0') {
            "11111111"
        } else {
            "00000000"
        };
        for spec in [
            &hex[..7],
            "",
            "ed25519:",
            "../../etc",
            other,
            &format!("{hex}0"),
        ] {
            assert!(!publisher_matches(&key, spec), "{spec}");
        }
        assert!(!is_publisher_spec(&"a".repeat(65)));
        assert!(!is_publisher_spec("0123456g"));
    }
}
