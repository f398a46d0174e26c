//! Build-time code generation for micro: `.proto` files in, Rust out, no `protoc` needed.
//!
//! # From a `.proto` to a running service
//!
//! **1. Dependencies** (`Cargo.toml`):
//!
//! ```toml
//! [dependencies]
//! micro-core = "0.1"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//!
//! [build-dependencies]
//! micro-codegen = "0.1"
//! ```
//!
//! **2. The proto** (`proto/greeter.proto`). Make the package the name the service
//! registers under, so gRPC paths and registry names agree (go-micro's convention):
//!
//! ```proto
//! syntax = "proto3";
//! package go.micro.srv.greeter;
//!
//! service Greeter {
//!   rpc Hello(Request) returns (Response) {}
//!   rpc Watch(Request) returns (stream Response) {}
//! }
//! message Request { string name = 1; }
//! message Response { string msg = 1; }
//! ```
//!
//! **3. `build.rs`**:
//!
//! ```no_run
//! fn main() -> Result<(), micro_codegen::Error> {
//!     micro_codegen::compile(&["proto/greeter.proto"], &["proto"])
//! }
//! ```
//!
//! A mistake in the proto fails the build with `greeter.proto:LINE:COLUMN: what`.
//!
//! **4. The service** (`src/main.rs`):
//!
//! ```ignore
//! use micro_core::stream::Sender;
//! use micro_core::{Context, Error, Service, ServiceError};
//!
//! mod greeter { micro_core::include_proto!("go.micro.srv.greeter"); }
//! use greeter::{greeter_handler, GreeterHandler, Request, Response};
//!
//! struct Greeter;
//!
//! #[micro_core::async_trait]
//! impl GreeterHandler for Greeter {
//!     async fn hello(&self, _ctx: Context, req: Request) -> Result<Response, Error> {
//!         Ok(Response { msg: format!("Hello {}", req.name) })
//!     }
//!     async fn watch(&self, _ctx: Context, req: Request, out: Sender<Response>) -> Result<(), Error> {
//!         for i in 0..3 {
//!             out.send(Response { msg: format!("{} #{i}", req.name) }).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ServiceError> {
//!     Service::new("go.micro.srv.greeter")?
//!         .handle(greeter_handler(Greeter))?
//!         .run()
//!         .await
//! }
//! ```
//!
//! `cargo run` it: it listens on a free port, registers in mDNS, and deregisters on
//! Ctrl-C. `grpcurl -plaintext <address> list` shows it (reflection is built in).
//!
//! **5. A caller**, in any process on the network:
//!
//! ```ignore
//! let greeter = GreeterService::new("go.micro.srv.greeter", service.client());
//! let reply = greeter.hello(Request { name: "Ewan".into() }).await?;
//! let mut updates = greeter.watch(Request { name: "Ewan".into() }).await?;
//! while let Some(update) = updates.recv().await { println!("{}", update?.msg); }
//! ```
//!
//! # What is generated
//!
//! For each proto service `Greeter`, named as go-micro's `protoc-gen-micro` names them:
//!
//! | item | what |
//! |---|---|
//! | `GreeterHandler` | a trait with one async method per RPC (see shapes below) |
//! | `greeter_handler(handler)` | the `server::Handler` to give `Service::handle`: its methods, its endpoints (`Greeter.Hello`, request and response types, `stream: true` on streams) for the registry, and its descriptors for reflection |
//! | `GreeterService` | a client: `GreeterService::new("registry.name", client)`; one method per RPC, `hello(req)`, taking the message or a `micro_core::Request` with options (timeout, metadata, JSON, node selection) |
//! | `impl micro_core::Message` | for every message: whether it has a JSON form (it has, unless [`Builder::serde`] turned serde off) |
//! | `FILE_DESCRIPTOR_SET` | the encoded descriptors, for gRPC reflection |
//!
//! A service already named `...Service` keeps its name for the client (`VesselService`,
//! handler `VesselServiceHandler`), as protoc-gen-micro's "ServiceService" rule has it.
//!
//! | RPC shape | handler method | client method |
//! |---|---|---|
//! | unary | `(ctx, req) -> Result<Resp>` | `(req) -> Result<Resp>` |
//! | server streaming | `(ctx, req, Sender<Resp>) -> Result<()>` | `(req) -> Result<Receiver<Resp>>` |
//! | client streaming | `(ctx, Receiver<Req>) -> Result<Resp>` | `(a Stream of Req, or a Request of one) -> Result<Resp>` |
//! | bidirectional | `(ctx, Receiver<Req>, Sender<Resp>) -> Result<()>` | `(a Stream of Req, or a Request of one) -> Result<Receiver<Resp>>` |
//!
//! Messages are prost structs. By default they also derive serde (field names as in
//! the proto), so every endpoint is callable with JSON (`application/grpc+json`) and
//! messages can be read from JSON files; [`Builder::serde`] turns that off. Well-known
//! types (`google.protobuf.Timestamp`, `Empty`, ...) come from `pbjson-types`, which
//! has the protobuf JSON mapping, re-exported as `micro_core::pbjson_types`.
//!
//! Packages nest: `micro_core::include_protos!()` includes every generated package
//! as modules (`go::micro::srv::greeter`), which imports between packages need;
//! `include_proto!("package")` includes one.
//!
//! The generated code refers only to `micro_core` (which re-exports prost, serde,
//! async-trait and pbjson-types), so `micro-core` is the one runtime dependency.
//!
//! Every generated item allows the lints a crate may deny on its own code (dead code,
//! `missing_docs`, `unreachable_pub`, clippy's groups, ...): generated code is not
//! yours to document, and a program that uses only the client, or only the server
//! side, still builds without a warning under `-D warnings`.

mod generator;
mod names;

use std::path::{Path, PathBuf};

/// Code generation failures.
///
/// `Debug` prints the same text as `Display`, so that `build.rs` returning this error
/// shows the file, line and message rather than a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file could not be read or parsed (`file:line:column: message`).
    #[error("{0}")]
    Proto(String),
    /// The protos use something this generator cannot produce yet.
    #[error("{0}")]
    Unsupported(String),
    /// Writing the Rust code failed.
    #[error("generating Rust code: {0}")]
    Generate(#[from] std::io::Error),
    /// `OUT_DIR` is not set (outside `build.rs`) and no output directory was given.
    #[error("OUT_DIR is not set; call from build.rs or set Builder::out_dir")]
    NoOutDir,
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The file, in the output directory, that nests every generated package in modules
/// (`micro_core::include_protos!()` includes it).
pub const INCLUDE_FILE: &str = "_micro_protos.rs";

/// The lint allowances on every generated item (prost's messages, enums and nested
/// modules, micro's handler traits, registration functions and clients, the
/// package modules of [`INCLUDE_FILE`]).
///
/// Generated code is not the user's to document or tidy, and a crate may use any part
/// of it (only the client, only the server side, neither), so what it leaves unused is
/// not dead: the generated code compiles without a warning under `-D warnings`,
/// `#![deny(missing_docs)]`, `unreachable_pub` or clippy's groups, whatever the crate
/// uses.
pub(crate) const ALLOW: &str = "#[allow(dead_code, missing_docs, missing_debug_implementations, missing_copy_implementations, unreachable_pub, unused_qualifications, unused_results, trivial_casts, trivial_numeric_casts, rust_2018_idioms, clippy::all, clippy::pedantic, clippy::nursery, clippy::restriction)]";

/// Puts [`ALLOW`] before each `impl` block and module of a file prost-build wrote (its
/// messages and enums have it already, through `type_attribute`): the enums' `impl`
/// blocks and nested message modules would otherwise keep the user's lint levels.
fn allow_lints(path: &Path) -> Result<(), Error> {
    let code = std::fs::read_to_string(path)?;
    let mut out = String::with_capacity(code.len() + 1024);
    let mut previous = "";
    for line in code.lines() {
        let item = line.trim_start();
        if (item.starts_with("impl ") || item.starts_with("impl<") || item.starts_with("pub mod "))
            && previous.trim() != ALLOW
        {
            out.push_str(&line[..line.len() - item.len()]);
            out.push_str(ALLOW);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
        previous = line;
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Compiles `protos`, looking up imports in `includes`, into `OUT_DIR`.
pub fn compile(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), Error> {
    Builder::new().compile(protos, includes)
}

/// Options for code generation.
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    serde: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            out_dir: None,
            serde: true,
        }
    }
}

impl Builder {
    /// The defaults: output to `OUT_DIR`, serde derives on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes to `dir` instead of `OUT_DIR`.
    #[must_use]
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Derives serde's `Serialize` and `Deserialize` on messages (field names as in
    /// the proto, missing fields default), so they can be read from and written to
    /// JSON and every endpoint also serves `application/grpc+json`. On by default;
    /// turn it off for protobuf only.
    #[must_use]
    pub fn serde(mut self, enable: bool) -> Self {
        self.serde = enable;
        self
    }

    /// Compiles `protos`, looking up imports in `includes`.
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::NoOutDir)?,
        };
        let mut compiler =
            protox::Compiler::new(includes).map_err(|e| Error::Proto(format!("{e:?}")))?;
        compiler.include_imports(true).include_source_info(true);
        for proto in protos {
            compiler
                .open_file(proto.as_ref())
                .map_err(|e| Error::Proto(format!("{e:?}")))?;
        }
        let fds = compiler.file_descriptor_set();

        let mut config = prost_build::Config::new();
        config
            .out_dir(&out_dir)
            .prost_path("::micro_core::prost")
            // Well-known types (Timestamp, Empty, ...) from pbjson-types, which has the
            // serde (protobuf JSON mapping) that prost-types lacks.
            .compile_well_known_types()
            .extern_path(".google.protobuf", "::micro_core::pbjson_types")
            .include_file(INCLUDE_FILE)
            .type_attribute(".", ALLOW)
            .service_generator(Box::new(generator::MicroGenerator {
                descriptors: prost::Message::encode_to_vec(&fds),
                with_services: Default::default(),
            }));
        if self.serde {
            config.type_attribute(
                ".",
                "#[derive(::micro_core::serde::Serialize, ::micro_core::serde::Deserialize)]\n#[serde(crate = \"::micro_core::serde\")]",
            );
            config.message_attribute(".", "#[serde(default)]");
        }
        let packages: std::collections::BTreeSet<String> = fds
            .file
            .iter()
            .map(|f| f.package().to_string())
            .filter(|p| p != "google.protobuf")
            .collect();
        let set = fds.clone();
        config.compile_fds(fds)?;
        allow_lints(&out_dir.join(INCLUDE_FILE))?;
        for package in packages {
            let name = if package.is_empty() { "_" } else { &package };
            let path = out_dir.join(format!("{name}.rs"));
            allow_lints(&path)?;
            let mut impls = String::new();
            // `write!` into a String cannot fail.
            let _ = generator::write_message_impls(&set, &package, self.serde, &mut impls);
            if impls.is_empty() {
                continue;
            }
            let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
            std::io::Write::write_all(&mut file, impls.as_bytes())?;
        }
        for proto in protos {
            println!("cargo:rerun-if-changed={}", proto.as_ref().display());
        }
        for include in includes {
            println!("cargo:rerun-if-changed={}", include.as_ref().display());
        }
        Ok(())
    }
}
