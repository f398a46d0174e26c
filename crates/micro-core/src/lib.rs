//! go-micro for Rust: named services with zero-setup discovery, on tokio, tonic and tower.
//!
//! `micro-core` is the one dependency a service needs. Write a `.proto`, generate code
//! with `micro-codegen` in `build.rs`, and:
//!
//! ```ignore
//! use micro_core::{Context, Error, Service, ServiceError};
//!
//! mod greeter { micro_core::include_proto!("greeter"); }
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
//! reflection, so `grpcurl` and Kubernetes probes work without proto files.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tls` | no | `transport::TlsTransport`: TLS and mutual TLS with rustls |
//! | `nats` | no | `broker::NatsBroker`: events through NATS, as go-micro lays them out |
//!
//! Environment, as go-micro reads it, once, into a [`Config`]: `MICRO_REGISTRY`,
//! `MICRO_REGISTRY_ADDRESS`, `MICRO_SERVER_ADDRESS` (`:50051`), `MICRO_SERVER_ADVERTISE`,
//! `MICRO_REGISTER_INTERVAL` and `MICRO_REGISTER_TTL`, `MICRO_MDNS_INTERFACES`,
//! `MICRO_BROKER`, `MICRO_BROKER_ADDRESS` (see [`config`]).
//!
//! Two error types: [`Error`] is go-micro's wire error, which handlers return and
//! callers receive; [`ServiceError`] is why a service could not start or serve, with
//! its cause as `source()`.

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
pub mod layers;
#[cfg(test)]
mod proptests;
mod request;
pub mod selector;
pub mod server;
mod service;
mod service_error;
pub mod stream;
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
pub use futures;
pub use pbjson_types;
pub use prost;
pub use prost_types;
pub use serde;
pub use tonic;

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
