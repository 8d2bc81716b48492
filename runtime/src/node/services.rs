//! The services this node runs: each activated ([`activate`]), kept in the
//! crash-safe store, and announced in the DHT under its service name and
//! its content id; looked up by name or by package.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bao_tree::io::outboard::PreOrderMemOutboard;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::events::{Events, NodeEvent};
use super::store::Store;
use super::{NodeError, activate};
use crate::blocks;
use crate::net::{Client, keys};
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
    pub shared_at: Instant,
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

    /// One of the service's invocation slots, if one is free now.
    pub(crate) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.invocations.clone().try_acquire_owned().ok()
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
                    if let Err(e) = self.run(package.into_inner(), announce).await {
                        tracing::warn!(service = %name, error = %e, "not restoring a stored package");
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

    /// The newest version of `name` running here.
    pub(crate) fn newest(&self, name: &str) -> Option<Arc<Provided>> {
        self.running
            .read()
            .expect("services lock")
            .values()
            .filter(|p| p.package.manifest().name == name)
            .max_by(|a, b| {
                a.package
                    .manifest()
                    .version
                    .cmp(&b.package.manifest().version)
            })
            .cloned()
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
