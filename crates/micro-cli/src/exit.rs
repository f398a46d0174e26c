//! What went wrong, and the exit code that tells a script.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (`health`: every node SERVING) |
//! | 1 | any other failure (a call's error other than those below, I/O) |
//! | 2 | usage or configuration: a bad flag, a bad `MICRO_*` value |
//! | 3 | bad request: a body that is not JSON, a bad endpoint, a 400 from the service |
//! | 4 | not found: no such service in the registry, or a 404 from the service |
//! | 5 | timeout: the deadline passed (408) |
//! | 6 | unavailable: no node could be reached (503), the registry or broker failed |
//! | 7 | `health`: a node answered, but not SERVING, or could not be checked |

use micro_core::{Error, ErrorKind};

/// Done.
pub const OK: u8 = 0;
/// Any other failure.
pub const FAILURE: u8 = 1;
/// Usage or configuration.
pub const USAGE: u8 = 2;
/// A bad request (400).
pub const BAD_REQUEST: u8 = 3;
/// Not found (404, or no such service).
pub const NOT_FOUND: u8 = 4;
/// Timeout (408).
pub const TIMEOUT: u8 = 5;
/// Unavailable (503).
pub const UNAVAILABLE: u8 = 6;
/// A node that is not SERVING (`health`).
pub const NOT_SERVING: u8 = 7;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A flag or variable that is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// A call failed, or was refused before it left; printed as go-micro's error JSON.
    #[error("{0}")]
    Call(Error),
    /// The registry failed.
    #[error("registry: {0}")]
    Registry(#[from] micro_core::registry::Error),
    /// The broker failed.
    #[error("broker: {0}")]
    Broker(#[from] micro_core::broker::BrokerError),
    /// Reading input or writing output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Some nodes are not SERVING (`health`); the report was printed.
    #[error("{0}")]
    NotServing(String),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        Self::Call(e)
    }
}

impl From<micro_core::ConfigError> for CliError {
    fn from(e: micro_core::ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}

impl From<micro_core::ServiceError> for CliError {
    fn from(e: micro_core::ServiceError) -> Self {
        Self::Config(e.to_string())
    }
}

/// Whether `e` says the registry knows no node of the service: the client's
/// `service <name>: not found` (a 500, as go-micro words and codes it), or a 404.
pub fn is_not_found(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound
        || (e.id == "go.micro.client" && e.detail.ends_with(": not found"))
}

/// The exit code of a call's error.
pub fn call_code(e: &Error) -> u8 {
    if is_not_found(e) {
        return NOT_FOUND;
    }
    match e.kind() {
        ErrorKind::BadRequest => BAD_REQUEST,
        ErrorKind::Timeout => TIMEOUT,
        ErrorKind::ServiceUnavailable => UNAVAILABLE,
        _ => FAILURE,
    }
}

impl CliError {
    /// The process's exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => USAGE,
            Self::Call(e) => call_code(e),
            Self::Registry(micro_core::registry::Error::NotFound(_)) => NOT_FOUND,
            Self::Registry(micro_core::registry::Error::Config(_)) => USAGE,
            Self::Registry(_) | Self::Broker(_) => UNAVAILABLE,
            Self::Io(_) => FAILURE,
            Self::NotServing(_) => NOT_SERVING,
        }
    }

    /// What to print on stderr: go-micro's error JSON for a call, else a sentence.
    pub fn report(&self) -> String {
        match self {
            Self::Call(e) => e.to_string(),
            other => format!("micro: {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_by_kind() {
        let codes = [
            call_code(&Error::bad_request("x", "bad")),
            call_code(&Error::not_found("x", "none")),
            call_code(&Error::internal_server_error(
                "go.micro.client",
                "service go.micro.srv.nope: not found",
            )),
            call_code(&Error::timeout("x", "slow")),
            call_code(&Error::service_unavailable("x", "down")),
            call_code(&Error::internal_server_error("x", "boom")),
        ];
        assert_eq!(
            codes,
            [
                BAD_REQUEST,
                NOT_FOUND,
                NOT_FOUND,
                TIMEOUT,
                UNAVAILABLE,
                FAILURE
            ]
        );
    }
}
