//! go-micro for Rust: named services with zero-setup discovery, on tokio, tonic and tower.
//!
//! `micro-core` is the one dependency a service needs. Write a `.proto`, generate code
//! with `micro-codegen` in `build.rs`, and:
//!
//! ```no_run
//! use micro_core::{Context, Error, Service, ServiceError};
//!
//! // mod greeter { micro_core::include_proto!("greeter"); }   (the generated code)
//! # mod greeter {
//! #     // A stand-in for what micro-codegen writes for greeter.proto.
//! #     #[derive(Clone, PartialEq, micro_core::prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize)]
//! #     #[serde(crate = "micro_core::serde")]
//! #     pub struct Request { #[prost(string, tag = "1")] pub name: String }
//! #     #[derive(Clone, PartialEq, micro_core::prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize)]
//! #     #[serde(crate = "micro_core::serde")]
//! #     pub struct Response { #[prost(string, tag = "1")] pub msg: String }
//! #     micro_core::json_message!(Request, Response);
//! #     #[micro_core::async_trait]
//! #     pub trait GreeterHandler: Send + Sync + 'static {
//! #         async fn hello(&self, ctx: micro_core::Context, req: Request) -> Result<Response, micro_core::Error>;
//! #     }
//! #     pub fn greeter_handler<H: GreeterHandler>(handler: H) -> micro_core::server::Handler {
//! #         let handler = std::sync::Arc::new(handler);
//! #         micro_core::server::Handler::new("greeter", "Greeter").unary(
//! #             "Hello", "Request", "Response",
//! #             move |ctx: micro_core::Context, req: Request| {
//! #                 let handler = std::sync::Arc::clone(&handler);
//! #                 async move { handler.hello(ctx, req).await }
//! #             },
//! #         )
//! #     }
//! # }
//! use greeter::{greeter_handler, GreeterHandler, Request, Response};
//!
//! struct Greeter;
//!
//! #[micro_core::async_trait]
//! impl GreeterHandler for Greeter {
//!     async fn hello(&self, _ctx: Context, req: Request) -> Result<Response, Error> {
//!         Ok(Response { msg: format!("Hello {}", req.name) })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ServiceError> {
//!     Service::new("go.micro.srv.greeter")?    // reads MICRO_* once; a bad value fails here
//!         .handle(greeter_handler(Greeter))?
//!         .run()                                // picks a port, registers, serves,
//!         .await                                // deregisters on SIGTERM
//! }
//! ```
//!
//! A client elsewhere calls it by name, never by address:
//! `GreeterService::new("go.micro.srv.greeter", service.client()).hello(req).await`;
//! per-call options go with the message: `.hello(micro_core::Request::new(req, options))`.
//! The [`client`] module tells how calls find nodes, and their deadlines and retries;
//! [`Service::client_options`] sets a service's client's defaults, and
//! [`Client::from_env`] makes a client without a service.
//!
//! The parts, each behind a trait with real implementations:
//!
//! | part | trait | default | also |
//! |---|---|---|---|
//! | discovery | [`registry::Registry`] | mDNS | memory; `CachedRegistry` in front of any |
//! | connections | [`transport::Transport`] | TCP | in-memory; TLS and mutual TLS (feature `tls`) |
//! | encoding | [`transport::Codec`] | protobuf | JSON (`application/grpc+json`), chosen per call |
//! | node choice | [`selector::Selector`] | random | round robin |
//! | middleware | tower `Layer` | | [`layers::LogLayer`], [`layers::TokenAuthLayer`] |
//! | events | [`broker::Broker`] | registry (no server) | memory; NATS (feature `nats`) |
//!
//! Every server also answers gRPC health checks (`grpc.health.v1`) and server
//! reflection, so `grpcurl` and Kubernetes probes work without proto files. Health
//! knows the server as a whole (`""`), the name it registers under
//! (`go.micro.srv.greeter`) and each proto service it serves (`greeter.Greeter`);
//! reflection lists the served services, health and reflection, nothing else.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tls` | no | `transport::TlsTransport`: TLS and mutual TLS with rustls |
//! | `nats` | no | `broker::NatsBroker`: events through NATS, as go-micro lays them out |
//! | `otel` | no | `telemetry::Telemetry`: W3C trace context propagation and OTLP/gRPC trace export |
//!
//! Every call, attempt, handled call, publish and delivery is a `tracing` span
//! (always, with no extra dependency), named and attributed by the OpenTelemetry
//! semantic conventions v1.40.0 ([`telemetry::semconv`]). With `otel` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, they are exported and one trace follows a
//! request across services and events (see [`telemetry`]).
//!
//! Environment, as go-micro reads it, once, into a [`Config`]: `MICRO_REGISTRY`,
//! `MICRO_REGISTRY_ADDRESS`, `MICRO_SERVER_ADDRESS` (`:50051`), `MICRO_SERVER_ADVERTISE`,
//! `MICRO_REGISTER_INTERVAL` and `MICRO_REGISTER_TTL`, `MICRO_MDNS_INTERFACES`,
//! `MICRO_BROKER`, `MICRO_BROKER_ADDRESS` (see [`config`]).
//!
//! Two error types: [`Error`] is go-micro's wire error, which handlers return and
//! callers receive ([`Error::kind`] says what it is: [`ErrorKind::NotFound`],
//! [`ErrorKind::Timeout`], ...; the [`error`] module has the HTTP-style and gRPC
//! codes); [`ServiceError`] is why a service could not start or serve, with its cause
//! as `source()`.
//!
//! # Choosing a registry
//!
//! The environment chooses by default (`MICRO_REGISTRY=mdns|memory|etcd`); in code,
//! give [`Service::registry`] one (the client a service hands out uses it too):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use micro_core::registry::{MdnsInterfaces, MdnsRegistry, MemoryRegistry, RegistryConfig, RegistryKind};
//! use micro_core::Service;
//!
//! // mDNS, the default: one LAN, nothing to install. Here on loopback only.
//! let mdns = MdnsRegistry::builder().interfaces(MdnsInterfaces::Loopback).build()?;
//! let service = Service::new("go.micro.srv.vessel")?.registry(Arc::new(mdns));
//!
//! // Memory: services in one process (tests).
//! let service = Service::new("go.micro.srv.vessel")?.registry(Arc::new(MemoryRegistry::new()));
//!
//! // etcd (feature `etcd`): a cluster, laid out as go-micro lays it out.
//! # #[cfg(feature = "etcd")] {
//! use micro_core::registry::EtcdRegistry;
//! let etcd = EtcdRegistry::new(["10.0.0.1:2379", "10.0.0.2:2379"])?;
//! let service = Service::new("go.micro.srv.vessel")?.registry(Arc::new(etcd));
//! # }
//!
//! // Or by kind, as the environment would name it.
//! let registry = RegistryConfig::default().kind(RegistryKind::Memory).build()?;
//! let service = Service::new("go.micro.srv.vessel")?.registry(registry);
//! # let _ = service;
//! # Ok(()) }
//! ```
//!
//! # Choosing a broker
//!
//! Events go through the broker `MICRO_BROKER` names (`registry`, the default, which
//! needs no server; `memory`; `nats`); in code, give [`Service::broker`] one:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use micro_core::broker::{MemoryBroker, RegistryBroker};
//! use micro_core::registry::MemoryRegistry;
//! use micro_core::transport::TcpTransport;
//! use micro_core::Service;
//!
//! // The registry broker: subscribers are registry nodes, deliveries gRPC calls.
//! let registry = Arc::new(MemoryRegistry::new());
//! let broker = RegistryBroker::new(registry.clone(), Arc::new(TcpTransport::default()));
//! let service = Service::new("go.micro.srv.vessel")?
//!     .registry(registry)
//!     .broker(Arc::new(broker));
//!
//! // Memory: one process (tests).
//! let service = Service::new("go.micro.srv.vessel")?.broker(Arc::new(MemoryBroker::new()));
//!
//! // NATS (feature `nats`), wire-compatible with go-micro's NATS broker.
//! # #[cfg(feature = "nats")] {
//! use micro_core::broker::NatsBroker;
//! let service = Service::new("go.micro.srv.vessel")?
//!     .broker(Arc::new(NatsBroker::new("nats://10.0.0.1:4222,nats://10.0.0.2:4222")));
//! # }
//! # let _ = service;
//! # Ok(()) }
//! ```
//!
//! # TLS and mutual TLS
//!
//! With the feature `tls`, [`transport::TlsTransport`] carries calls over TLS; a
//! service serves with it and its client ([`Service::client`]) dials with it. The
//! server presents its certificate; with `require_client_auth(true)` it also refuses
//! any caller without a certificate signed by the CA (mutual TLS). Server
//! certificates are checked against the IP address the registry gives, unless
//! `server_name` says otherwise.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use micro_core::registry::RegistryConfig;
//! use micro_core::transport::{TlsOptions, TlsTransport};
//! use micro_core::{Client, Service};
//!
//! let registry = RegistryConfig::from_env()?.build()?; // MICRO_REGISTRY's
//! let ca = std::fs::read("ca.pem")?;
//!
//! // Server side, TLS: its certificate and key.
//! let tls = TlsTransport::new(
//!     TlsOptions::new().identity(std::fs::read("server.pem")?, std::fs::read("server.key")?),
//! )?;
//! let service = Service::new("go.micro.srv.vessel")?.transport(Arc::new(tls));
//!
//! // Server side, mutual TLS: callers must present a certificate the CA signed.
//! let mtls = TlsTransport::new(
//!     TlsOptions::new()
//!         .identity(std::fs::read("server.pem")?, std::fs::read("server.key")?)
//!         .ca(ca.clone())
//!         .require_client_auth(true),
//! )?;
//! let service = Service::new("go.micro.srv.vessel")?.transport(Arc::new(mtls));
//!
//! // Client side, TLS: trust the CA.
//! let tls = TlsTransport::new(TlsOptions::new().ca(ca.clone()))?;
//! let client = Client::builder(registry.clone(), Arc::new(tls)).build();
//!
//! // Client side, mutual TLS: trust the CA and present a certificate it signed.
//! let mtls = TlsTransport::new(
//!     TlsOptions::new()
//!         .identity(std::fs::read("client.pem")?, std::fs::read("client.key")?)
//!         .ca(ca),
//! )?;
//! let client = Client::builder(registry, Arc::new(mtls)).build();
//! # let _ = client;
//! # Ok(()) }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! # Middleware: server and client layers
//!
//! Both sides take tower layers: [`Service::layer`] wraps every request the server
//! takes, [`ClientBuilder::layer`] every request a client sends (set on a service's
//! client with [`Service::client_options`]). [`layers`] has two (logging, token
//! auth) and how to write more. Here a server admits only callers with a token, and
//! its client sends the token another service asks for:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use micro_core::layers::{LogLayer, TokenAuthLayer};
//! use micro_core::registry::MemoryRegistry;
//! use micro_core::Service;
//! use tower::util::MapRequestLayer;
//!
//! let service = Service::new("go.micro.srv.consignment")?
//!     .registry(Arc::new(MemoryRegistry::new()))
//!     .layer(TokenAuthLayer::new(["s3cret"])) // server: runs second
//!     .layer(LogLayer)                        // server: runs first
//!     .client_options(|client| {
//!         client
//!             .request_timeout(Duration::from_secs(5))
//!             .layer(MapRequestLayer::new(|mut request: http::Request<tonic::body::Body>| {
//!                 let token = http::HeaderValue::from_static("Bearer vessel-token");
//!                 request.headers_mut().insert("authorization", token);
//!                 request
//!             }))
//!             .layer(LogLayer)
//!     });
//! let client = service.client(); // every call it makes carries the token
//! # let _ = client;
//! # Ok::<(), micro_core::ServiceError>(())
//! ```
//!
//! # A client without a service
//!
//! A command-line tool reads the same variables a service reads, and needs no service
//! of its own: [`Client::from_env`] (or [`ClientBuilder::from_env`] for options).
//!
//! ```no_run
//! # fn main() -> Result<(), micro_core::ServiceError> {
//! use std::time::Duration;
//! use micro_core::ClientBuilder;
//!
//! let client = ClientBuilder::from_env()? // MICRO_REGISTRY, MICRO_REGISTRY_ADDRESS, ...
//!     .request_timeout(Duration::from_secs(10))
//!     .build();
//! // let vessels = VesselService::new("go.micro.srv.vessel", client);   (generated code)
//! # let _ = client;
//! # Ok(()) }
//! ```

// Modules lowest first: each uses only those above it in this list.
mod addr;
pub mod broker;
pub mod client;
pub mod codec;
pub mod config;
mod context;
pub mod error;
pub mod event;
mod grpc_timeout;
mod id;
pub mod layers;
pub mod log;
#[cfg(feature = "metrics")]
pub mod metrics;
mod observe;
#[cfg(test)]
mod proptests;
mod request;
pub mod selector;
pub mod server;
mod service;
mod service_error;
pub mod stream;
pub mod telemetry;
mod unavailable;

pub use client::{Client, ClientBuilder};
pub use codec::Message;
pub use config::{Config, ConfigError};
pub use context::{CallOptions, ContentType, Context, Metadata};
pub use error::{Error, ErrorKind};
pub use request::{IntoRequest, IntoStreamingRequest, Request};
pub use server::Server;
pub use service::{Service, shutdown_signal};
pub use service_error::ServiceError;

pub use micro_registry as registry;
pub use micro_transport as transport;

// What generated code refers to, so a service needs no other dependency.
pub use async_trait::async_trait;
/// Streams and futures combinators (`StreamExt`, `Stream`, ...) for streaming
/// handlers and calls: `futures-util`, the part of `futures` micro uses.
pub use futures_util as futures;
pub use pbjson_types;
pub use prost;
pub use prost_types;
pub use serde;
pub use tonic;
/// micro logs through `tracing`; a service's own logs need no other dependency:
/// `micro_core::tracing::info!(..)`.
pub use tracing;
/// The subscriber micro installs by default, for programs that build their own.
pub use tracing_subscriber;

/// Includes the code `micro-codegen` generated for every package, nested in modules
/// as the packages are (`go.micro.srv.vessel` becomes `go::micro::srv::vessel`):
/// `micro_core::include_protos!();`
#[macro_export]
macro_rules! include_protos {
    () => {
        include!(concat!(env!("OUT_DIR"), "/_micro_protos.rs"));
    };
}

/// Includes the code `micro-codegen` generated for a proto package:
/// `micro_core::include_proto!("go.micro.srv.vessel");`
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
