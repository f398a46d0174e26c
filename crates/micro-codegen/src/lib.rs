//! Build-time code generation for micro: `.proto` files in, Rust out, no `protoc` needed.
//!
//! From `build.rs`:
//!
//! ```no_run
//! fn main() -> Result<(), micro_codegen::Error> {
//!     micro_codegen::compile(&["proto/greeter.proto"], &["proto"])
//! }
//! ```
//!
//! and in the crate, `mod greeter { micro_core::include_proto!("greeter"); }` (the
//! argument is the proto package). For each proto message you get a prost struct; for
//! each proto service `Greeter` you get, named as go-micro's `protoc-gen-micro` names
//! them:
//!
//! - `GreeterHandler`, a trait with one async method per RPC:
//!   `async fn hello(&self, ctx: Context, request: Request) -> Result<Response, Error>`;
//! - `register_greeter_handler(service.server(), handler)`, which serves it and lists
//!   its endpoints (`Greeter.Hello`) in the registry;
//! - `GreeterService`, a client created with a registry name:
//!   `GreeterService::new("go.micro.srv.greeter", service.client())`, with
//!   `hello(request)` and `hello_with(request, CallOptions)`. A service already named
//!   `...Service` keeps its name (`VesselService`), as in protoc-gen-micro.
//!
//! The generated code refers only to `micro_core` (which re-exports prost and friends),
//! so `micro-core` is the one runtime dependency.
//!
//! Parsing is done by `protox` (pure Rust); a broken `.proto` gives an error naming the
//! file, line and column.

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
            .service_generator(Box::new(generator::MicroGenerator {
                serde: self.serde,
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
        config.compile_fds(fds)?;
        for proto in protos {
            println!("cargo:rerun-if-changed={}", proto.as_ref().display());
        }
        for include in includes {
            println!("cargo:rerun-if-changed={}", include.as_ref().display());
        }
        Ok(())
    }
}
