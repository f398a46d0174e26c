//! The `Registry` trait, its options and the watcher.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{Error, Node, Service};

/// Service discovery: where services announce their nodes and clients find them.
///
/// The shape is go-micro's `registry.Registry`. Implementations: [`MemoryRegistry`]
/// (one process), [`MdnsRegistry`] (one LAN, no server; the default) and, with the
/// feature `etcd`, `EtcdRegistry`.
///
/// [`MemoryRegistry`]: crate::MemoryRegistry
/// [`MdnsRegistry`]: crate::MdnsRegistry
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Announces the service's nodes. Registering a node again refreshes it.
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error>;
    /// Withdraws the service's nodes.
    async fn deregister(&self, service: &Service) -> Result<(), Error>;
    /// Every known version of the named service, each with its nodes.
    ///
    /// Fails with [`Error::NotFound`] when no node of the service is known.
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error>;
    /// Every known service (name and version; nodes may be left out).
    async fn list_services(&self) -> Result<Vec<Service>, Error>;
    /// A stream of changes, in the order they happened.
    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error>;
    /// The registry's name: `memory`, `mdns`, ...
    fn name(&self) -> &'static str;
    /// Tells the registry that `node` of `service` refused a connection. A registry
    /// that can check sooner than the node's TTL (mDNS asks the node directly) drops
    /// the node from this process's view, and tells watchers, when it does not answer.
    /// Returns at once; the check runs in the background. Default: nothing.
    fn suspect(&self, service: &str, node: &Node) {
        let _ = (service, node);
    }
}

/// Options for [`Registry::register`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterOptions {
    /// How long the registration lives unless renewed. `None`: until deregistered
    /// (or, for mDNS, while the process lives).
    pub ttl: Option<Duration>,
}

impl RegisterOptions {
    /// Sets the time to live: `RegisterOptions::default().ttl(Duration::from_secs(90))`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// Options for [`Registry::watch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Watch one service only; `None` watches all.
    pub service: Option<String>,
}

impl WatchOptions {
    /// Watch one service.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            service: Some(name.into()),
        }
    }
}

/// What happened to a service's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A node appeared.
    Create,
    /// A known node changed.
    Update,
    /// A node left.
    Delete,
}

/// One change seen by a [`Watcher`] (go-micro's `registry.Result`).
///
/// `service` holds the version and the node(s) the change is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The service version and the affected node(s).
    pub service: Service,
}

/// Receives registry changes in order.
///
/// A watcher never slows the registry down: each one has a bounded buffer, and one
/// that falls behind gets [`Error::Lagged`] (then resumes with the newest events), so
/// it can re-read the registry to resync.
#[derive(Debug)]
pub struct Watcher {
    receiver: broadcast::Receiver<Event>,
    service: Option<String>,
}

impl Watcher {
    /// The next change. [`Error::Stopped`] once the registry is gone.
    pub async fn next(&mut self) -> Result<Event, Error> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => {
                    if self
                        .service
                        .as_deref()
                        .is_none_or(|name| name == event.service.name)
                    {
                        return Ok(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(Error::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(Error::Stopped),
            }
        }
    }

    /// Stops watching.
    pub fn stop(self) {}
}

/// Fans events out to watchers; shared by the implementations in this crate.
#[derive(Debug, Clone)]
pub(crate) struct WatchHub {
    sender: broadcast::Sender<Event>,
}

/// How many events a watcher may fall behind before it lags.
pub(crate) const WATCH_BUFFER: usize = 1024;

impl WatchHub {
    pub(crate) fn new() -> Self {
        let (sender, _) = broadcast::channel(WATCH_BUFFER);
        Self { sender }
    }

    pub(crate) fn publish(&self, action: Action, service: Service) {
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(Event { action, service });
    }

    pub(crate) fn watcher(&self, options: WatchOptions) -> Watcher {
        Watcher {
            receiver: self.sender.subscribe(),
            service: options.service,
        }
    }
}
