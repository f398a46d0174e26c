//! The prost service generator that writes micro's handlers, registration and clients.

use std::fmt::Write as _;

use prost_build::{Method, Service, ServiceGenerator};
use prost_types::FileDescriptorSet;

use crate::Error;
use crate::names::{client_name, snake_case};

/// Refuses streaming RPCs up front, with the file and method named.
pub(crate) fn check_supported(fds: &FileDescriptorSet) -> Result<(), Error> {
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                if method.client_streaming() || method.server_streaming() {
                    return Err(Error::Unsupported(format!(
                        "{}: {}.{} is a streaming RPC; micro-codegen generates unary RPCs only so far",
                        file.name(),
                        service.name(),
                        method.name()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Writes micro's code for each proto service.
pub(crate) struct MicroGenerator {
    /// Messages derive serde: serve and call with JSON too.
    pub(crate) serde: bool,
    /// The encoded `FileDescriptorSet` of everything compiled, for gRPC reflection.
    pub(crate) descriptors: Vec<u8>,
    /// Packages that have services (and so need the descriptors).
    pub(crate) with_services: std::collections::HashSet<String>,
}

impl ServiceGenerator for MicroGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        self.with_services.insert(service.package.clone());
        // `write!` into a String cannot fail.
        let _ = generate_service(&service, self.serde, buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if !self.with_services.contains(package) {
            return;
        }
        let _ = writeln!(buf);
        let _ = writeln!(
            buf,
            "/// The encoded `FileDescriptorSet` of the protos compiled with this package, served by gRPC reflection."
        );
        let _ = writeln!(
            buf,
            "pub const FILE_DESCRIPTOR_SET: &[u8] = b\"{}\";",
            escape(&self.descriptors)
        );
    }
}

/// Bytes as the inside of a Rust byte string literal.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

fn doc_lines(buf: &mut String, lines: &[String], indent: &str) -> std::fmt::Result {
    for line in lines {
        writeln!(buf, "{indent}///{line}")?;
    }
    if !lines.is_empty() {
        writeln!(buf, "{indent}///")?;
    }
    Ok(())
}

/// The last segment of a proto type name: `.go.micro.srv.vessel.Specification` -> `Specification`.
fn short_type(proto_type: &str) -> &str {
    proto_type.rsplit('.').next().unwrap_or(proto_type)
}

fn generate_service(service: &Service, serde: bool, buf: &mut String) -> std::fmt::Result {
    let (unary, call) = if serde {
        ("unary", "call")
    } else {
        ("unary_proto", "call_proto")
    };
    let name = &service.name;
    let package = &service.package;
    let full = if package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{package}.{}", service.proto_name)
    };
    let handler = format!("{name}Handler");
    let register = format!("register_{}_handler", snake_case(name));
    let client = client_name(name);

    // Handler trait.
    writeln!(buf)?;
    doc_lines(buf, &service.comments.leading, "")?;
    writeln!(
        buf,
        "/// Server side of `{full}`: implement it and serve it with [`{register}`]."
    )?;
    writeln!(buf, "#[::micro_core::async_trait]")?;
    writeln!(
        buf,
        "pub trait {handler}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
    )?;
    for method in &service.methods {
        doc_lines(buf, &method.comments.leading, "    ")?;
        writeln!(
            buf,
            "    /// Serves `{}.{}`.",
            service.proto_name, method.proto_name
        )?;
        writeln!(
            buf,
            "    async fn {}(&self, ctx: ::micro_core::Context, request: {}) -> ::core::result::Result<{}, ::micro_core::Error>;",
            method.name, method.input_type, method.output_type
        )?;
    }
    writeln!(buf, "}}")?;

    // Registration.
    writeln!(buf)?;
    writeln!(
        buf,
        "/// Serves `handler` as `{full}` on `server`, and lists its endpoints for the registry."
    )?;
    writeln!(
        buf,
        "pub fn {register}<H: {handler}>(server: &mut ::micro_core::Server, handler: H) -> ::core::result::Result<(), ::micro_core::Error> {{"
    )?;
    writeln!(buf, "    #[allow(unused_variables)]")?;
    writeln!(buf, "    let handler = ::std::sync::Arc::new(handler);")?;
    writeln!(
        buf,
        "    let endpoints = ::micro_core::server::Handler::new({package:?}, {:?})",
        service.proto_name
    )?;
    writeln!(buf, "        .file_descriptor_set(FILE_DESCRIPTOR_SET)")?;
    for method in &service.methods {
        write_unary_route(buf, method, unary)?;
    }
    writeln!(buf, "        ;")?;
    writeln!(buf, "    server.handle(endpoints)")?;
    writeln!(buf, "}}")?;

    // Client.
    writeln!(buf)?;
    writeln!(
        buf,
        "/// Client of `{full}`: calls the service registered under a name."
    )?;
    writeln!(buf, "#[derive(Clone, Debug)]")?;
    writeln!(buf, "pub struct {client} {{")?;
    writeln!(buf, "    name: ::std::string::String,")?;
    writeln!(buf, "    client: ::micro_core::Client,")?;
    writeln!(buf, "}}")?;
    writeln!(buf)?;
    writeln!(buf, "impl {client} {{")?;
    writeln!(
        buf,
        "    /// Calls the service registered as `name` (e.g. `\"{package}\"`) through `client`."
    )?;
    writeln!(
        buf,
        "    pub fn new(name: impl ::core::convert::Into<::std::string::String>, client: ::micro_core::Client) -> Self {{"
    )?;
    writeln!(buf, "        Self {{ name: name.into(), client }}")?;
    writeln!(buf, "    }}")?;
    writeln!(buf)?;
    writeln!(buf, "    /// The registry name this client calls.")?;
    writeln!(buf, "    pub fn name(&self) -> &str {{")?;
    writeln!(buf, "        &self.name")?;
    writeln!(buf, "    }}")?;
    for method in &service.methods {
        let path = format!("/{full}/{}", method.proto_name);
        writeln!(buf)?;
        doc_lines(buf, &method.comments.leading, "    ")?;
        writeln!(
            buf,
            "    /// Calls `{}.{}` with the client's defaults.",
            service.proto_name, method.proto_name
        )?;
        writeln!(
            buf,
            "    pub async fn {}(&self, request: {}) -> ::core::result::Result<{}, ::micro_core::Error> {{",
            method.name, method.input_type, method.output_type
        )?;
        writeln!(
            buf,
            "        self.{}_with(request, ::micro_core::CallOptions::default()).await",
            method.name.trim_start_matches("r#")
        )?;
        writeln!(buf, "    }}")?;
        writeln!(buf)?;
        writeln!(
            buf,
            "    /// Calls `{}.{}` with per-call options (timeout, metadata; pass `ctx.call_options()` from a handler).",
            service.proto_name, method.proto_name
        )?;
        writeln!(
            buf,
            "    pub async fn {}_with(&self, request: {}, options: ::micro_core::CallOptions) -> ::core::result::Result<{}, ::micro_core::Error> {{",
            method.name.trim_start_matches("r#"),
            method.input_type,
            method.output_type
        )?;
        writeln!(
            buf,
            "        self.client.{call}(&self.name, {path:?}, request, options).await"
        )?;
        writeln!(buf, "    }}")?;
    }
    writeln!(buf, "}}")?;
    Ok(())
}

fn write_unary_route(buf: &mut String, method: &Method, unary: &str) -> std::fmt::Result {
    writeln!(
        buf,
        "        .{unary}({:?}, {:?}, {:?}, {{",
        method.proto_name,
        short_type(&method.input_proto_type),
        short_type(&method.output_proto_type)
    )?;
    writeln!(
        buf,
        "            let handler = ::std::sync::Arc::clone(&handler);"
    )?;
    writeln!(
        buf,
        "            move |ctx: ::micro_core::Context, request: {}| {{",
        method.input_type
    )?;
    writeln!(
        buf,
        "                let handler = ::std::sync::Arc::clone(&handler);"
    )?;
    writeln!(
        buf,
        "                async move {{ handler.{}(ctx, request).await }}",
        method.name
    )?;
    writeln!(buf, "            }}")?;
    writeln!(buf, "        }})")?;
    Ok(())
}
