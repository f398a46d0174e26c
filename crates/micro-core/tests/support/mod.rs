//! What the socket-level tests share: a test message, and starting a service on
//! loopback and waiting until it has registered.

// Each test file is a crate of its own that compiles this module and uses only part
// of it; what one file leaves unused is not dead.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_core::registry::{MemoryRegistry, Registry};
use micro_core::server::Handler;
use micro_core::transport::{TcpTransport, Transport};
use micro_core::{Client, Config, Context, Error, Service, ServiceError};
use tokio::sync::oneshot;

#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde")]
pub(crate) struct Msg {
    #[prost(string, tag = "1")]
    pub(crate) text: String,
    #[prost(int64, tag = "2")]
    pub(crate) number: i64,
}

micro_core::json_message!(Msg);

pub(crate) fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        number: 0,
    }
}

/// The path of `handler("Svc", ..)`'s method.
pub(crate) const PATH: &str = "/test.Svc/Call";

/// A running service; stopped (and awaited) by `stop`.
pub(crate) struct Running {
    /// Tells the service to shut down.
    pub(crate) stop: oneshot::Sender<()>,
    /// The service's `run_until`.
    pub(crate) task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Running {
    pub(crate) async fn stop(self) -> Result<(), ServiceError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// Starts service `name` on a free loopback port over `transport`, with the handlers
/// and layers `setup` adds (an environment-free configuration), and returns once one more of its nodes is registered.
pub(crate) async fn start_on(
    name: &str,
    registry: &Arc<dyn Registry>,
    transport: Arc<dyn Transport>,
    setup: impl FnOnce(Service) -> Service,
) -> Running {
    let before = registry
        .get_service(name)
        .await
        .map(|s| s.iter().map(|v| v.nodes.len()).sum::<usize>())
        .unwrap_or(0);
    let service = Service::from_config(name, Config::default())
        .address("127.0.0.1:0")
        .registry(Arc::clone(registry))
        .transport(transport);
    let service = setup(service);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = registry
            .get_service(name)
            .await
            .map(|s| s.iter().map(|v| v.nodes.len()).sum::<usize>())
            .unwrap_or(0);
        if now > before {
            break;
        }
        assert!(Instant::now() < deadline, "{name} never registered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Running { stop, task }
}

/// `start_on` over TCP.
pub(crate) async fn start(
    name: &str,
    registry: &Arc<dyn Registry>,
    setup: impl FnOnce(Service) -> Service,
) -> Running {
    start_on(name, registry, Arc::new(TcpTransport::default()), setup).await
}

pub(crate) fn registry() -> Arc<dyn Registry> {
    Arc::new(MemoryRegistry::new())
}

/// A client over TCP.
pub(crate) fn client(registry: &Arc<dyn Registry>) -> Client {
    Client::new(Arc::clone(registry), Arc::new(TcpTransport::default()))
}

/// A handler answering `reply(ctx, request)`.
pub(crate) fn handler<F, Fut>(name: &str, reply: F) -> Handler
where
    F: Fn(Context, Msg) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Msg, Error>> + Send + 'static,
{
    Handler::new("test", name).unary("Call", "Msg", "Msg", reply)
}

/// TCP, counting dials per address.
#[derive(Debug, Default)]
pub(crate) struct CountingTransport {
    tcp: TcpTransport,
    pub(crate) dials: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl micro_core::transport::Transport for CountingTransport {
    async fn listen(
        &self,
        address: &str,
    ) -> Result<Box<dyn micro_core::transport::Listener>, micro_core::transport::TransportError>
    {
        self.tcp.listen(address).await
    }
    async fn dial(
        &self,
        address: &str,
    ) -> Result<micro_core::transport::BoxedIo, micro_core::transport::TransportError> {
        *self
            .dials
            .lock()
            .unwrap()
            .entry(address.to_string())
            .or_default() += 1;
        self.tcp.dial(address).await
    }
    fn name(&self) -> &'static str {
        "counting-tcp"
    }
}

impl CountingTransport {
    /// How many times `address` was dialed.
    pub(crate) fn dials(&self, address: &str) -> usize {
        self.dials
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(0)
    }
}

/// A free loopback address that refuses connections (nothing listens on it).
pub(crate) fn refusing_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}
