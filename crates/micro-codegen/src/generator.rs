//! The prost service generator that writes micro's handlers, registration and clients.

use std::fmt::Write as _;

use crate::names::{client_name, snake_case};
use prost_build::{Method, Service, ServiceGenerator};

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

/// The `Handler` and `Client` methods for an RPC shape: `unary`, `server_streaming`,
/// `client_streaming` or `streaming`, with `_proto` when messages have no serde.
fn shape(method: &Method, serde: bool) -> (String, String) {
    let base = match (method.client_streaming, method.server_streaming) {
        (false, false) => ("unary", "call"),
        (false, true) => ("server_streaming", "server_streaming"),
        (true, false) => ("client_streaming", "client_streaming"),
        (true, true) => ("streaming", "streaming"),
    };
    let suffix = if serde { "" } else { "_proto" };
    (format!("{}{suffix}", base.0), format!("{}{suffix}", base.1))
}

fn generate_service(service: &Service, serde: bool, buf: &mut String) -> std::fmt::Result {
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
        let (input, output) = (&method.input_type, &method.output_type);
        let signature = match (method.client_streaming, method.server_streaming) {
            (false, false) => format!(
                "request: {input}) -> ::core::result::Result<{output}, ::micro_core::Error>"
            ),
            (false, true) => format!(
                "request: {input}, responses: ::micro_core::stream::Sender<{output}>) -> ::core::result::Result<(), ::micro_core::Error>"
            ),
            (true, false) => format!(
                "requests: ::micro_core::stream::Receiver<{input}>) -> ::core::result::Result<{output}, ::micro_core::Error>"
            ),
            (true, true) => format!(
                "requests: ::micro_core::stream::Receiver<{input}>, responses: ::micro_core::stream::Sender<{output}>) -> ::core::result::Result<(), ::micro_core::Error>"
            ),
        };
        writeln!(
            buf,
            "    async fn {}(&self, ctx: ::micro_core::Context, {signature};",
            method.name
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
        write_route(buf, method, &shape(method, serde).0)?;
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
        write_client_method(buf, service, &full, method, &shape(method, serde).1)?;
    }
    writeln!(buf, "}}")?;
    Ok(())
}

fn write_route(buf: &mut String, method: &Method, register: &str) -> std::fmt::Result {
    writeln!(
        buf,
        "        .{register}({:?}, {:?}, {:?}, {{",
        method.proto_name,
        short_type(&method.input_proto_type),
        short_type(&method.output_proto_type)
    )?;
    writeln!(
        buf,
        "            let handler = ::std::sync::Arc::clone(&handler);"
    )?;
    let (input, output) = (&method.input_type, &method.output_type);
    let (params, args) = match (method.client_streaming, method.server_streaming) {
        (false, false) => (format!("request: {input}"), "request"),
        (false, true) => (
            format!("request: {input}, responses: ::micro_core::stream::Sender<{output}>"),
            "request, responses",
        ),
        (true, false) => (
            format!("requests: ::micro_core::stream::Receiver<{input}>"),
            "requests",
        ),
        (true, true) => (
            format!(
                "requests: ::micro_core::stream::Receiver<{input}>, responses: ::micro_core::stream::Sender<{output}>"
            ),
            "requests, responses",
        ),
    };
    writeln!(
        buf,
        "            move |ctx: ::micro_core::Context, {params}| {{"
    )?;
    writeln!(
        buf,
        "                let handler = ::std::sync::Arc::clone(&handler);"
    )?;
    writeln!(
        buf,
        "                async move {{ handler.{}(ctx, {args}).await }}",
        method.name
    )?;
    writeln!(buf, "            }}")?;
    writeln!(buf, "        }})")?;
    Ok(())
}

fn write_client_method(
    buf: &mut String,
    service: &Service,
    full: &str,
    method: &Method,
    call: &str,
) -> std::fmt::Result {
    let path = format!("/{full}/{}", method.proto_name);
    let name = method.name.trim_start_matches("r#");
    let (input, output) = (&method.input_type, &method.output_type);
    let stream_in = format!(
        "impl ::micro_core::futures::Stream<Item = {input}> + ::core::marker::Send + 'static"
    );
    let (param, returns, what) = match (method.client_streaming, method.server_streaming) {
        (false, false) => (format!("request: {input}"), output.clone(), "request"),
        (false, true) => (
            format!("request: {input}"),
            format!("::micro_core::stream::Receiver<{output}>"),
            "request",
        ),
        (true, false) => (format!("requests: {stream_in}"), output.clone(), "requests"),
        (true, true) => (
            format!("requests: {stream_in}"),
            format!("::micro_core::stream::Receiver<{output}>"),
            "requests",
        ),
    };
    writeln!(buf)?;
    doc_lines(buf, &method.comments.leading, "    ")?;
    writeln!(
        buf,
        "    /// Calls `{}.{}` with the client's defaults.",
        service.proto_name, method.proto_name
    )?;
    writeln!(
        buf,
        "    pub async fn {}(&self, {param}) -> ::core::result::Result<{returns}, ::micro_core::Error> {{",
        method.name
    )?;
    writeln!(
        buf,
        "        self.{name}_with({what}, ::micro_core::CallOptions::default()).await"
    )?;
    writeln!(buf, "    }}")?;
    writeln!(buf)?;
    writeln!(
        buf,
        "    /// Calls `{}.{}` with per-call options (timeout, metadata, codec, node selection; pass `ctx.call_options()` from a handler).",
        service.proto_name, method.proto_name
    )?;
    writeln!(
        buf,
        "    pub async fn {name}_with(&self, {param}, options: ::micro_core::CallOptions) -> ::core::result::Result<{returns}, ::micro_core::Error> {{"
    )?;
    writeln!(
        buf,
        "        self.client.{call}(&self.name, {path:?}, {what}, options).await"
    )?;
    writeln!(buf, "    }}")?;
    Ok(())
}
