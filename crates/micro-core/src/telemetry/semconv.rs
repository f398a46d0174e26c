//! The attribute names micro's spans carry, pinned to one version of the
//! OpenTelemetry semantic conventions: [`VERSION`] (v1.40.0).
//!
//! The RPC conventions were release candidates in v1.40.0; the status attribute is
//! `rpc.response.status_code` there (the string form of the gRPC code, `OK`,
//! `UNAVAILABLE`, …). Names in the `micro.` namespace are micro's own.

/// The semantic conventions version these names follow.
pub const VERSION: &str = "1.40.0";
/// The schema URL of [`VERSION`].
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.40.0";

/// The RPC system: always `grpc` here.
pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
/// The full method, `package.Service/Method` (the path without its leading `/`).
pub const RPC_METHOD: &str = "rpc.method";
/// The status the call ended with, as the gRPC code's name (`OK`, `UNAVAILABLE`).
pub const STATUS_CODE: &str = "rpc.response.status_code";
/// Why a call failed (the status code's name), only on failure.
pub const ERROR_TYPE: &str = "error.type";
/// The server's host (client: the chosen node; server: its own).
pub const SERVER_ADDRESS: &str = "server.address";
/// The server's port.
pub const SERVER_PORT: &str = "server.port";
/// The peer's address, as the server sees it.
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
/// The messaging system: `micro` for micro's brokers.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// The topic.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `send` or `process`.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// The message's `Micro-Id`.
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// micro: the registry name of the service called or served.
pub const MICRO_SERVICE: &str = "micro.service";
/// micro: the node an attempt went to.
pub const MICRO_NODE_ID: &str = "micro.node.id";
/// micro: the attempt's number, from 1.
pub const MICRO_ATTEMPT: &str = "micro.attempt";
/// micro: how many times a call was retried (attempts − 1).
pub const MICRO_RETRIES: &str = "micro.retries";

/// The name of a gRPC status code as the conventions record it (`OK`, `NOT_FOUND`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a server span ends in error for `code` (the conventions' rule: only the
/// codes that say the server failed).
pub fn server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_the_conventions_say() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
        assert!(server_error(tonic::Code::Unavailable));
        assert!(!server_error(tonic::Code::NotFound));
    }
}
