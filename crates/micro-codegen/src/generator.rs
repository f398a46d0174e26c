//! The prost service generator that writes micro's handlers, registration and clients.

use std::fmt::Write as _;

use crate::ALLOW;
use crate::names::{client_name, message_path, snake_case};
use prost_build::{Method, Service, ServiceGenerator};

/// Writes micro's code for each proto service.
pub(crate) struct MicroGenerator {
    /// The encoded `FileDescriptorSet` of everything compiled, for gRPC reflection.
    pub(crate) descriptors: Vec<u8>,
    /// Packages that have services (and so need the descriptors).
    pub(crate) with_services: std::collections::HashSet<String>,
}

impl ServiceGenerator for MicroGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        self.with_services.insert(service.package.clone());
        // `write!` into a String cannot fail.
        let _ = generate_service(&service, buf);
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
        let _ = writeln!(buf, "{ALLOW}");
        let _ = writeln!(
            buf,
            "pub const FILE_DESCRIPTOR_SET: &[u8] = b\"{}\";",
            escape(&self.descriptors)
        );
    }
}

/// Implements `micro_core::Message` for every message of `package`: with its JSON form
/// when messages derive serde, else protobuf only.
///
/// prost-build calls no hook for packages without services, so this is written after
/// it, into each package's file.
pub(crate) fn write_message_impls(
    set: &prost_types::FileDescriptorSet,
    package: &str,
    serde: bool,
    buf: &mut String,
) -> std::fmt::Result {
    let mut paths = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == package) {
        for message in &file.message_type {
            collect_messages(message, &mut Vec::new(), &mut paths);
        }
    }
    if paths.is_empty() {
        return Ok(());
    }
    writeln!(buf)?;
    if serde {
        writeln!(buf, "::micro_core::json_message!(")?;
        for path in &paths {
            writeln!(buf, "    {path},")?;
        }
        writeln!(buf, ");")?;
    } else {
        for path in &paths {
            writeln!(buf, "impl ::micro_core::Message for {path} {{}}")?;
        }
    }
    Ok(())
}

/// The Rust paths of `message` and the messages nested in it (map entries are not
/// generated as types).
fn collect_messages<'a>(
    message: &'a prost_types::DescriptorProto,
    parents: &mut Vec<&'a str>,
    out: &mut Vec<String>,
) {
    if message.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    out.push(message_path(parents, message.name()));
    parents.push(message.name());
    for nested in &message.nested_type {
        collect_messages(nested, parents, out);
    }
    parents.pop();
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
/// `client_streaming` or `streaming`.
fn shape(method: &Method) -> (&'static str, &'static str) {
    match (method.client_streaming, method.server_streaming) {
        (false, false) => ("unary", "call"),
        (false, true) => ("server_streaming", "server_streaming"),
        (true, false) => ("client_streaming", "client_streaming"),
        (true, true) => ("streaming", "streaming"),
    }
}

fn generate_service(service: &Service, buf: &mut String) -> std::fmt::Result {
    let name = &service.name;
    let package = &service.package;
    let full = if package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{package}.{}", service.proto_name)
    };
    let handler = format!("{name}Handler");
    let register = snake_case(&handler);
    let client = client_name(name);

    // Handler trait.
    writeln!(buf)?;
    doc_lines(buf, &service.comments.leading, "")?;
    writeln!(
        buf,
        "/// Server side of `{full}`: implement it and serve it with `service.handle({register}(handler))`."
    )?;
    writeln!(buf, "{ALLOW}")?;
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
        "/// `handler` as the methods of `{full}`, with its endpoints for the registry: `service.handle({register}(handler))`."
    )?;
    writeln!(buf, "{ALLOW}")?;
    writeln!(
        buf,
        "pub fn {register}<H: {handler}>(handler: H) -> ::micro_core::server::Handler {{"
    )?;
    writeln!(buf, "    #[allow(unused_variables)]")?;
    writeln!(buf, "    let handler = ::std::sync::Arc::new(handler);")?;
    writeln!(
        buf,
        "    ::micro_core::server::Handler::new({package:?}, {:?})",
        service.proto_name
    )?;
    writeln!(buf, "        .file_descriptor_set(FILE_DESCRIPTOR_SET)")?;
    for method in &service.methods {
        write_route(buf, method, shape(method).0)?;
    }
    writeln!(buf, "}}")?;

    // Client.
    writeln!(buf)?;
    writeln!(
        buf,
        "/// Client of `{full}`: calls the service registered under a name."
    )?;
    writeln!(buf, "{ALLOW}")?;
    writeln!(buf, "#[derive(Clone, Debug)]")?;
    writeln!(buf, "pub struct {client} {{")?;
    writeln!(buf, "    name: ::std::string::String,")?;
    writeln!(buf, "    client: ::micro_core::Client,")?;
    writeln!(buf, "}}")?;
    writeln!(buf)?;
    writeln!(buf, "{ALLOW}")?;
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
        write_client_method(buf, service, &full, method, shape(method).1)?;
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
    let (input, output) = (&method.input_type, &method.output_type);
    let receiver = format!("::micro_core::stream::Receiver<{output}>");
    let (generics, param, returns, bounds, types) =
        match (method.client_streaming, method.server_streaming) {
            (false, false) => (
                "",
                format!("request: impl ::micro_core::IntoRequest<{input}>"),
                output.clone(),
                String::new(),
                format!("{input}, {output}"),
            ),
            (false, true) => (
                "",
                format!("request: impl ::micro_core::IntoRequest<{input}>"),
                receiver,
                String::new(),
                format!("{input}, {output}"),
            ),
            (true, streaming) => (
                "",
                format!("requests: impl ::micro_core::IntoStreamingRequest<Message = {input}>"),
                if streaming { receiver } else { output.clone() },
                String::new(),
                format!("{input}, {output}"),
            ),
        };
    let what = if method.client_streaming {
        "requests"
    } else {
        "request"
    };
    writeln!(buf)?;
    doc_lines(buf, &method.comments.leading, "    ")?;
    writeln!(
        buf,
        "    /// Calls `{}.{}`: pass the message, or a `micro_core::Request` with per-call options (timeout, metadata, JSON, node selection; from a handler, `ctx.call_options()`).",
        service.proto_name, method.proto_name
    )?;
    writeln!(
        buf,
        "    pub async fn {}{generics}(&self, {param}) -> ::core::result::Result<{returns}, ::micro_core::Error>{bounds} {{",
        method.name
    )?;
    writeln!(
        buf,
        "        self.client.{call}::<{types}>(&self.name, {path:?}, {what}).await"
    )?;
    writeln!(buf, "    }}")?;
    Ok(())
}
