//! The service model, with go-micro's field names and JSON shape.
//!
//! A [`Service`] is one *version* of a named service; its [`Node`]s are the running
//! instances of that version. The JSON form is go-micro's (`registry/registry.go`), so
//! a value written by one can be read by the other.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

/// One version of a named service and the nodes that serve it.
///
/// ```
/// use micro_registry::{Node, Service};
///
/// let service = Service::new("go.micro.srv.vessel")
///     .version("latest")
///     .node(Node::new("go.micro.srv.vessel-1", "10.0.0.5:50051"));
/// assert_eq!(service.nodes.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The registry name, e.g. `go.micro.srv.vessel`.
    pub name: String,
    /// The version, e.g. `latest`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// Service-level metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
    /// The RPC endpoints the service offers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Endpoint>,
    /// The running instances.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<Node>,
}

impl Service {
    /// A service with a name and nothing else.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Adds a node.
    #[must_use]
    pub fn node(mut self, node: Node) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds an endpoint.
    #[must_use]
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }
}

/// One running instance of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique id, by convention `<service name>-<uuid>`.
    pub id: String,
    /// `host:port` that other hosts can reach.
    pub address: String,
    /// Node metadata (go-micro puts `protocol`, `server`, `transport`, `registry`, `broker` here).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
}

impl Node {
    /// A node with an id and an address.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            address: address.into(),
            metadata: HashMap::new(),
        }
    }
}

/// An RPC endpoint, named `"Service.Method"` as go-micro names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `"ProtoService.Method"`, e.g. `VesselService.FindAvailable`.
    pub name: String,
    /// The request type.
    #[serde(default)]
    pub request: Option<Value>,
    /// The response type.
    #[serde(default)]
    pub response: Option<Value>,
    /// Endpoint metadata (go-micro sets `stream: "true"` on streaming endpoints).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
}

/// A type description: a name, a type name and, for messages, the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// Field or message name.
    pub name: String,
    /// Type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Nested fields.
    #[serde(default, deserialize_with = "null_as_default")]
    pub values: Vec<Value>,
}

impl Value {
    /// A value with a name and a type and no fields.
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            type_name: type_name.into(),
            values: Vec::new(),
        }
    }
}

/// Go writes empty maps and slices as `null`; read that as empty.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_micro_json_with_nulls() {
        let json = r#"{"name":"go.micro.srv.vessel","version":"latest","metadata":null,
            "endpoints":[{"name":"VesselService.FindAvailable","request":{"name":"Specification","type":"Specification","values":null},"response":null,"metadata":{"stream":"false"}}],
            "nodes":[{"id":"go.micro.srv.vessel-1","address":"10.0.0.5:50051","metadata":null}]}"#;
        let service: Service = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(service.name, "go.micro.srv.vessel");
        assert!(service.metadata.is_empty());
        assert_eq!(
            service.endpoints[0]
                .request
                .as_ref()
                .map(|v| v.type_name.as_str()),
            Some("Specification")
        );
        assert_eq!(service.nodes[0].address, "10.0.0.5:50051");
    }

    #[test]
    fn writes_go_micro_field_names() {
        let json = serde_json::to_value(Value::new("spec", "Specification")).unwrap_or_default();
        assert_eq!(json["type"], "Specification");
        assert_eq!(json["name"], "spec");
    }
}
