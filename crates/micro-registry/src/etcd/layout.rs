//! go-micro's etcd layout: where a node lives and how its value is written.
//!
//! One key per node, `/micro/registry/<service>/<node id>`, with `/` in either name
//! replaced by `-`; the value is the service's JSON holding that one node
//! (go-micro `registry/etcd/etcd.go`: `nodePath`, `encode`).

use crate::{Error, Node, Service};

/// Where every registration lives.
pub(crate) const PREFIX: &str = "/micro/registry/";

/// go-micro's escaping: a `/` inside a name would split the key, so it becomes `-`.
fn escape(name: &str) -> String {
    name.replace('/', "-")
}

/// go-micro joins the key with `path.Join`, which would fold `.` and `..`
/// segments into their parent; such names cannot round-trip, so they are refused.
pub(crate) fn check_name(kind: &str, name: &str, service: &str) -> Result<(), Error> {
    if name == "." || name == ".." {
        return Err(Error::InvalidService {
            service: service.to_string(),
            reason: format!("{kind} {name:?} cannot be an etcd key segment"),
        });
    }
    Ok(())
}

/// The key of one node: `/micro/registry/<service>/<node id>`.
pub(crate) fn node_key(service: &str, node_id: &str) -> String {
    format!("{PREFIX}{}/{}", escape(service), escape(node_id))
}

/// The prefix under which every node of a service lives (trailing `/` included, so
/// `greeter` does not match `greeter.v2`).
pub(crate) fn service_prefix(service: &str) -> String {
    format!("{PREFIX}{}/", escape(service))
}

/// The value stored for one node: the service's JSON with only that node.
pub(crate) fn encode(service: &Service, node: &Node) -> Result<Vec<u8>, Error> {
    let one = Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone(),
        endpoints: service.endpoints.clone(),
        nodes: vec![node.clone()],
    };
    serde_json::to_vec(&one).map_err(|e| Error::InvalidService {
        service: service.name.clone(),
        reason: format!("cannot encode as JSON: {e}"),
    })
}

/// Reads a stored value. Values that are not a service with exactly one usable node
/// are refused: whoever wrote them, they cannot be called.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Service, String> {
    let key = String::from_utf8_lossy(key);
    let service: Service = serde_json::from_slice(value)
        .map_err(|e| format!("{key}: not a go-micro service value: {e}"))?;
    if service.name.is_empty() {
        return Err(format!("{key}: service value without a name"));
    }
    match service.nodes.as_slice() {
        [node] if !node.id.is_empty() && !node.address.is_empty() => Ok(service),
        [_] => Err(format!("{key}: node without an id or address")),
        nodes => Err(format!(
            "{key}: {} nodes in one value, expected 1",
            nodes.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_go_micro() {
        assert_eq!(
            node_key(
                "go.micro.srv.consignment",
                "go.micro.srv.consignment-0b6a7d2e"
            ),
            "/micro/registry/go.micro.srv.consignment/go.micro.srv.consignment-0b6a7d2e"
        );
        assert_eq!(node_key("a/b", "n/1"), "/micro/registry/a-b/n-1");
        assert_eq!(service_prefix("greeter"), "/micro/registry/greeter/");
    }

    #[test]
    fn refuses_values_that_cannot_be_called() {
        assert!(decode(b"k", b"{not json").is_err());
        assert!(decode(b"k", br#"{"name":"s","nodes":[]}"#).is_err());
        assert!(decode(b"k", br#"{"name":"s","nodes":[{"id":"","address":"a:1"}]}"#).is_err());
        assert!(decode(b"k", br#"{"name":"","nodes":[{"id":"n","address":"a:1"}]}"#).is_err());
        assert!(
            decode(
                b"k",
                br#"{"name":"s","nodes":[{"id":"n","address":"a:1"}]}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn refuses_dot_segments() {
        assert!(check_name("node id", "..", "s").is_err());
        assert!(check_name("node id", "s-1", "s").is_ok());
    }
}
