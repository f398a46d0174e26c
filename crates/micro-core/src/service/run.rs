//! A service's life: listen, register, serve, re-register; on a signal, refuse new
//! calls, leave the registry, then stop accepting and drain, every step with a
//! deadline so that shutdown ends whatever is down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use micro_registry::{Node, RegisterOptions, Registry};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{PendingSubscription, Service};
use crate::broker::{Broker, Subscriber};
use crate::{ServiceError, addr};

/// The least and the most time the trace export gets at shutdown.
#[cfg(feature = "otel")]
const TRACE_FLUSH_FLOOR: Duration = Duration::from_millis(500);
#[cfg(feature = "otel")]
const TRACE_FLUSH_CEILING: Duration = Duration::from_secs(2);

/// The least time the registry and the broker each get at shutdown, even when the
/// grace period is shorter (or spent).
const STEP_FLOOR: Duration = Duration::from_millis(250);

impl Service {
    /// Serves until SIGINT or SIGTERM, then stops as [`Service::run_until`] does.
    ///
    /// A second SIGINT or SIGTERM while stopping ends the process at once: `run` logs
    /// it (at error level) and calls [`std::process::exit`] with 128 + the signal's
    /// number, the shell's convention for a death by signal: **130** after SIGINT,
    /// **143** after SIGTERM. Nothing else runs after it (no destructors, no more
    /// draining). Elsewhere than Unix, a second Ctrl-C exits with 130. To handle
    /// signals yourself, use [`Service::run_until`], which never exits the process.
    pub async fn run(self) -> Result<(), ServiceError> {
        // Installed before anything starts, so no signal finds the default action.
        let mut signals = Signals::install();
        let (first_tx, first_rx) = oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            let first = signals.recv().await;
            tracing::info!(signal = first.name(), "shutting down");
            let _ = first_tx.send(());
            let second = signals.recv().await;
            tracing::error!(
                signal = second.name(),
                code = second.exit_code(),
                "second signal while shutting down: exiting now"
            );
            std::process::exit(second.exit_code());
        });
        let result = self
            .run_until(async move {
                // An error: the watcher is gone (it never drops the sender otherwise).
                let _ = first_rx.await;
            })
            .await;
        watcher.abort();
        result
    }

    /// Serves until `shutdown` resolves, then stops within the server's grace period
    /// plus at most half a second, whatever is down:
    ///
    /// 1. new calls are refused at once (UNAVAILABLE, which callers retry on another
    ///    node; health checks still answer, NOT_SERVING), re-registration stops;
    /// 2. the registry forgets the node, while the listener is still open: it gets
    ///    half the grace period (at least 250 ms);
    /// 3. the listener closes, connections are told to go away, subscriptions end,
    ///    and calls in flight (which ran on all along) finish until the grace period
    ///    is over; then their connections are closed;
    /// 4. the broker disconnects: it gets what is left of the grace period (at least
    ///    250 ms).
    ///
    /// A step that runs out of time is logged (warning) and the next one starts; a
    /// node whose deregistration timed out leaves the registry when its registration
    /// expires (its TTL). Shutdown during start-up (a broker or registry that does
    /// not answer) stops the same way.
    ///
    /// When the program has installed no `tracing` subscriber, a plain one is
    /// installed first, so that start-up, registration and shutdown are logged at
    /// `info` to stderr ([`crate::log`]).
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        self.config.check()?;
        #[cfg(feature = "otel")]
        let telemetry = crate::log::install_default_with(
            self.config.log_filter.as_deref(),
            self.telemetry
                .take()
                .unwrap_or_else(crate::telemetry::Telemetry::from_env)
                .default_service_name(&self.name),
        );
        #[cfg(not(feature = "otel"))]
        crate::log::install_default(self.config.log_filter.as_deref());
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
            format!("{}-{}", self.name, crate::id::random_uuid()),
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

        // Served until this function returns: dropping it stops it.
        let _metrics = self.serve_metrics().await?;
        let refuse = CancellationToken::new();
        let (close, closed) = oneshot::channel();
        let mut serving = tokio::spawn(crate::server::serve_with(
            listener,
            self.server.service(),
            self.server.connection_options(),
            crate::server::Control {
                refuse: refuse.clone(),
                close: closed,
                served: Some(Arc::from(self.name.as_str())),
                scope: crate::observe::ServerScope::new(&self.name, self.server.paths()),
            },
        ));
        let stopping = Stopping {
            registry: Arc::clone(&registry),
            record: record.clone(),
            broker: Arc::clone(&broker),
            grace: self.server.grace(),
            refuse,
            close,
            ttl: self.config.register_ttl,
            #[cfg(feature = "otel")]
            telemetry,
        };

        tokio::pin!(shutdown);
        let ttl = self.config.register_ttl;
        let pending = std::mem::take(&mut self.subscriptions);
        let started = tokio::select! {
            started = start(broker.as_ref(), registry.as_ref(), &record, ttl, pending) => started,
            () = &mut shutdown => {
                tracing::info!(service = %self.name, "shutdown during start-up");
                // It may have registered already: deregister all the same.
                return stopping.stop(&self.server, Vec::new(), Some(serving), true).await;
            }
        };
        let subscribers = match started {
            Ok(subscribers) => subscribers,
            Err(e) => {
                // Nothing is left behind: the server stops, the broker disconnects.
                let _ = stopping
                    .stop(&self.server, Vec::new(), Some(serving), false)
                    .await;
                return Err(e);
            }
        };
        self.server.set_health(&self.name, true).await;
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

        let served_early = tokio::select! {
            () = &mut shutdown => None,
            result = &mut serving => Some(result),
        };
        reregister.abort();
        match served_early {
            None => {
                stopping
                    .stop(&self.server, subscribers, Some(serving), true)
                    .await
            }
            Some(result) => {
                // The server failed on its own: leave the registry all the same.
                let _ = stopping.stop(&self.server, subscribers, None, true).await;
                match result {
                    Ok(served) => served,
                    Err(join) => Err(ServiceError::Server(Box::new(join))),
                }
            }
        }
    }

    /// Starts the `/metrics` endpoint when an address is configured.
    #[cfg(feature = "metrics")]
    async fn serve_metrics(&self) -> Result<Option<crate::metrics::MetricsServer>, ServiceError> {
        let Some(address) = &self.config.metrics_address else {
            return Ok(None);
        };
        crate::metrics::serve(address)
            .await
            .map(Some)
            .map_err(|source| ServiceError::Listen {
                address: address.clone(),
                source: micro_transport::TransportError::Listen {
                    address: address.clone(),
                    source,
                },
            })
    }

    /// Without the feature `metrics` there is nothing to serve (`Config::check`
    /// refuses an address).
    #[cfg(not(feature = "metrics"))]
    #[allow(clippy::unused_async)]
    async fn serve_metrics(&self) -> Result<Option<()>, ServiceError> {
        Ok(None)
    }
}

/// Connects the broker, subscribes and registers.
async fn start(
    broker: &dyn Broker,
    registry: &dyn Registry,
    record: &micro_registry::Service,
    ttl: Duration,
    pending: Vec<PendingSubscription>,
) -> Result<Vec<Subscriber>, ServiceError> {
    broker
        .connect()
        .await
        .map_err(|e| ServiceError::Broker(Box::new(e)))?;
    let mut subscribers = Vec::new();
    for PendingSubscription(topic, options, handler) in pending {
        let subscriber = broker
            .subscribe(&topic, handler, options)
            .await
            .map_err(|e| ServiceError::Broker(Box::new(e)))?;
        subscribers.push(subscriber);
    }
    register_with_retries(registry, record, ttl).await?;
    Ok(subscribers)
}

/// What stopping a started (or starting) service needs.
struct Stopping {
    registry: Arc<dyn Registry>,
    record: micro_registry::Service,
    broker: Arc<dyn Broker>,
    grace: Duration,
    refuse: CancellationToken,
    close: oneshot::Sender<Instant>,
    ttl: Duration,
    /// The trace export of the subscriber the service installed, flushed last.
    #[cfg(feature = "otel")]
    telemetry: Option<crate::telemetry::TelemetryGuard>,
}

impl Stopping {
    /// Stops in the order and within the deadlines [`Service::run_until`] documents.
    async fn stop(
        self,
        server: &crate::Server,
        subscribers: Vec<Subscriber>,
        serving: Option<tokio::task::JoinHandle<Result<(), ServiceError>>>,
        registered: bool,
    ) -> Result<(), ServiceError> {
        let began = Instant::now();
        let end = began + self.grace;
        let node = self.record.nodes[0].id.as_str();
        self.refuse.cancel();
        server.set_health(&self.record.name, false).await;

        if registered {
            self.deregister(began).await;
        }

        // Stop accepting; calls in flight get until the end of the grace period.
        let _ = self.close.send(end);
        // Nothing more is delivered here. Dropping a subscriber does not block: a
        // broker's unsubscribe spawns what talks to the network.
        drop(subscribers);
        let served = match serving {
            Some(serving) => drained(serving, end).await,
            None => Ok(()),
        };

        let disconnect_by = end.max(Instant::now() + STEP_FLOOR);
        match tokio::time::timeout_at(disconnect_by, self.broker.disconnect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "broker disconnect failed"),
            Err(_) => tracing::warn!(
                broker = self.broker.name(),
                after = ?disconnect_by - began,
                "broker disconnect timed out"
            ),
        }
        tracing::info!(node, took = ?began.elapsed(), "stopped");
        #[cfg(feature = "otel")]
        if let Some(telemetry) = self.telemetry {
            // What is left of the grace period, within bounds: spans are not lost
            // to a short grace, nor does a dead collector hold the exit for long.
            let left = end.saturating_duration_since(Instant::now());
            telemetry
                .shutdown(left.clamp(TRACE_FLUSH_FLOOR, TRACE_FLUSH_CEILING))
                .await;
        }
        served
    }

    /// Deregisters within half the grace period (at least [`STEP_FLOOR`]).
    async fn deregister(&self, began: Instant) {
        let node = self.record.nodes[0].id.as_str();
        let by = began + (self.grace / 2).max(STEP_FLOOR);
        match tokio::time::timeout_at(by, self.registry.deregister(&self.record)).await {
            Ok(Ok(())) => tracing::info!(service = %self.record.name, node, "deregistered"),
            Ok(Err(e)) => tracing::warn!(node, error = %e, "deregister failed"),
            Err(_) => tracing::warn!(
                node,
                after = ?by - began,
                ttl = ?self.ttl,
                "deregister timed out; the registry forgets the node when its registration expires"
            ),
        }
    }
}

/// Waits for the server, which cuts its last connections off at `end`; a little
/// after it, gives up on it.
async fn drained(
    mut serving: tokio::task::JoinHandle<Result<(), ServiceError>>,
    end: Instant,
) -> Result<(), ServiceError> {
    match tokio::time::timeout_at(end.max(Instant::now()) + STEP_FLOOR, &mut serving).await {
        Ok(Ok(served)) => served,
        Ok(Err(join)) => Err(ServiceError::Server(Box::new(join))),
        Err(_) => {
            tracing::warn!("the server did not stop at the end of the grace period");
            serving.abort();
            Ok(())
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
            Ok(()) => {
                tracing::info!(
                    service = %record.name,
                    node = record.nodes.first().map(|n| n.id.as_str()).unwrap_or_default(),
                    registry = registry.name(),
                    "registered"
                );
                return Ok(());
            }
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

/// A signal that stops a service.
#[derive(Clone, Copy, Debug)]
enum Received {
    Terminate,
    Interrupt,
}

impl Received {
    fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }

    /// 128 + the signal's number.
    fn exit_code(self) -> i32 {
        match self {
            Self::Terminate => 143,
            Self::Interrupt => 130,
        }
    }
}

/// The process's SIGTERM and SIGINT (Ctrl-C elsewhere), listened to from the
/// moment they are installed.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Self {
                    unix: Some((term, int)),
                },
                _ => {
                    tracing::warn!("cannot install signal handlers; falling back to Ctrl-C");
                    Self { unix: None }
                }
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next signal; never, if none can be received.
    async fn recv(&mut self) -> Received {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            tokio::select! {
                Some(()) = term.recv() => return Received::Terminate,
                Some(()) = int.recv() => return Received::Interrupt,
                else => {}
            }
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            return Received::Interrupt;
        }
        // No way to be told to stop: serve until killed.
        std::future::pending().await
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    let received = Signals::install().recv().await;
    tracing::info!(signal = received.name(), "received");
}
