//! A service's life: listen, register, serve, re-register; on a signal, leave the
//! registry first, then stop accepting and drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use micro_registry::{Node, RegisterOptions, Registry};

use super::{PendingSubscription, Service};
use crate::{ServiceError, addr};

impl Service {
    /// Serves until SIGINT or SIGTERM, then deregisters and stops.
    pub async fn run(self) -> Result<(), ServiceError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then deregisters and stops: the registry
    /// forgets the node before the listener closes, and in-flight calls get the
    /// server's grace period to finish.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        self.config.check()?;
        let registry = self.resolve_registry().map_err(ServiceError::Registry)?;
        let broker = self.event_broker();
        let listen = addr::listen_address(&self.config.server_address);
        let listener =
            self.transport
                .listen(&listen)
                .await
                .map_err(|source| ServiceError::Listen {
                    address: listen.clone(),
                    source,
                })?;
        let bound = listener.local_addr();
        let advertised = self
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| addr::advertise_address(&bound));

        let mut node = Node::new(
            format!("{}-{}", self.name, uuid::Uuid::new_v4()),
            advertised,
        );
        for (key, value) in [
            ("protocol", "grpc"),
            ("server", "micro"),
            ("transport", self.transport.name()),
            ("registry", registry.name()),
            ("broker", broker.name()),
        ] {
            node.metadata.insert(key.to_string(), value.to_string());
        }
        let record = micro_registry::Service {
            name: self.name.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            endpoints: self.server.endpoints().to_vec(),
            nodes: vec![node],
        };

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let router = self.server.service();
        let grace = self.server.grace();
        let mut stop_server = stop_rx.clone();
        let serving = tokio::spawn(crate::server::serve(listener, router, grace, async move {
            let _ = stop_server.wait_for(|stop| *stop).await;
        }));

        broker
            .connect()
            .await
            .map_err(|e| ServiceError::Broker(Box::new(e)))?;
        let mut subscribers = Vec::new();
        for PendingSubscription(topic, options, handler) in std::mem::take(&mut self.subscriptions)
        {
            let subscriber = broker
                .subscribe(&topic, handler, options)
                .await
                .map_err(|e| ServiceError::Broker(Box::new(e)))?;
            subscribers.push(subscriber);
        }
        self.server.set_health(true).await;
        let ttl = self.config.register_ttl;
        register_with_retries(registry.as_ref(), &record, ttl).await?;
        tracing::info!(
            service = %self.name,
            version = %self.version,
            node = %record.nodes[0].id,
            address = %record.nodes[0].address,
            listen = %bound,
            registry = registry.name(),
            "service started"
        );

        let reregister = {
            let registry = Arc::clone(&registry);
            let record = record.clone();
            let interval = self.config.register_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = registry
                        .register(&record, RegisterOptions::default().ttl(ttl))
                        .await
                    {
                        tracing::warn!(error = %e, "re-register failed");
                    }
                }
            })
        };

        tokio::pin!(shutdown);
        let mut serving = serving;
        let served_early = tokio::select! {
            () = &mut shutdown => None,
            result = &mut serving => Some(result),
        };
        reregister.abort();
        self.server.set_health(false).await;
        // Leave the registry before closing the listener, so nobody is sent to a
        // node that no longer answers.
        if let Err(e) = registry.deregister(&record).await {
            tracing::warn!(error = %e, "deregister failed");
        }
        tracing::info!(service = %self.name, node = %record.nodes[0].id, "deregistered");
        // Subscriptions end with the node: nothing more is delivered here.
        drop(subscribers);
        if let Err(e) = broker.disconnect().await {
            tracing::warn!(error = %e, "broker disconnect failed");
        }
        let _ = stop_tx.send(true);
        let result = match served_early {
            Some(result) => result,
            None => serving.await,
        };
        match result {
            Ok(served) => served,
            Err(join) => Err(ServiceError::Server(Box::new(join))),
        }
    }
}

async fn register_with_retries(
    registry: &dyn Registry,
    record: &micro_registry::Service,
    ttl: Duration,
) -> Result<(), ServiceError> {
    let mut attempt = 0u32;
    loop {
        match registry
            .register(record, RegisterOptions::default().ttl(ttl))
            .await
        {
            Ok(()) => return Ok(()),
            // A service that can never be registered as it is will not be fixed by
            // retrying; nor is anything after the third try.
            Err(e @ micro_registry::Error::InvalidService { .. }) => {
                return Err(ServiceError::Registry(e));
            }
            Err(e) if attempt >= 2 => return Err(ServiceError::Registry(e)),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "register failed");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("received SIGTERM"),
                    _ = int.recv() => tracing::info!("received SIGINT"),
                }
                return;
            }
            _ => tracing::warn!("cannot install signal handlers; falling back to Ctrl-C"),
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        // No way to be told to stop: serve until killed.
        std::future::pending::<()>().await;
    }
}
