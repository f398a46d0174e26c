//! micro's error: go-micro's `{id, code, detail, status}`, and how it crosses gRPC.
//!
//! # Mapping to and from gRPC
//!
//! A handler's [`Error`] becomes a `tonic::Status` whose code comes from the table
//! below and whose message is the error's JSON, exactly as go-micro's gRPC server writes
//! it, so Go and Rust callers read the same error:
//!
//! | `code` (HTTP style) | gRPC code |
//! |---|---|
//! | 400 | INVALID_ARGUMENT |
//! | 401 | UNAUTHENTICATED |
//! | 403 | PERMISSION_DENIED |
//! | 404 | NOT_FOUND |
//! | 408 | DEADLINE_EXCEEDED |
//! | 409 | ALREADY_EXISTS |
//! | 412 | FAILED_PRECONDITION |
//! | 429 | RESOURCE_EXHAUSTED |
//! | 499 | CANCELLED |
//! | 500 | INTERNAL |
//! | 501 | UNIMPLEMENTED |
//! | 503 | UNAVAILABLE |
//! | other | UNKNOWN |
//!
//! Going back, a status whose message is micro/go-micro error JSON with a code is read
//! as that error; any other status becomes `{id: "go.micro.client", code: <from the
//! table, reversed; 500 for the rest>, detail: <message>}`.

use std::fmt;

use serde::{Deserialize, Serialize};
use tonic::Code;

/// An error with go-micro's shape: who raised it, an HTTP-style code, what happened.
///
/// ```
/// use micro_core::Error;
///
/// let err = Error::not_found("go.micro.srv.vessel", "no vessel found by that spec");
/// assert_eq!(err.code, 404);
/// assert_eq!(
///     err.to_string(),
///     r#"{"id":"go.micro.srv.vessel","code":404,"detail":"no vessel found by that spec","status":"Not Found"}"#
/// );
/// let status: tonic::Status = err.clone().into();
/// assert_eq!(status.code(), tonic::Code::NotFound);
/// assert_eq!(Error::from(status), err);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// Who raised it: a service name, or `go.micro.client` / `go.micro.server`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// An HTTP status code: 400, 404, 408, 500, ...
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
    /// What happened.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The code's HTTP reason phrase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
}

fn is_zero(code: &i32) -> bool {
    *code == 0
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(id: impl Into<String>, detail: impl Into<String>) -> Self {
                Self::new(id, detail, $code)
            }
        )*
    };
}

impl Error {
    /// An error with any code.
    pub fn new(id: impl Into<String>, detail: impl Into<String>, code: i32) -> Self {
        Self {
            id: id.into(),
            code,
            detail: detail.into(),
            status: reason_phrase(code).to_string(),
        }
    }

    constructors! {
        /// 400: the request is wrong.
        bad_request => 400;
        /// 401: no or bad credentials.
        unauthorized => 401;
        /// 403: not allowed.
        forbidden => 403;
        /// 404: what was asked for does not exist.
        not_found => 404;
        /// 405: the method is not allowed.
        method_not_allowed => 405;
        /// 408: the deadline passed.
        timeout => 408;
        /// 409: a conflict with the current state.
        conflict => 409;
        /// 500: something failed inside.
        internal_server_error => 500;
        /// 503: the service cannot answer now.
        service_unavailable => 503;
    }

    /// Reads an error from its JSON (go-micro's `errors.Parse`). Text that is not
    /// error JSON, or error JSON without a code, is a 500 whose detail is the text (go-micro
    /// leaves the code 0; micro never hands out an error without one).
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str::<Error>(text) {
            Ok(e) if e.code != 0 => e,
            Ok(e) if !e.id.is_empty() => {
                let detail = if e.detail.is_empty() {
                    text.to_string()
                } else {
                    e.detail
                };
                Self::new(e.id, detail, 500)
            }
            _ => Self::new("", text, 500),
        }
    }

    /// The gRPC code for this error's HTTP-style code.
    pub fn grpc_code(&self) -> Code {
        match self.code {
            200 => Code::Ok,
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            408 => Code::DeadlineExceeded,
            409 => Code::AlreadyExists,
            412 => Code::FailedPrecondition,
            429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            500 => Code::Internal,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// The HTTP-style code go-micro's client gives a gRPC code.
pub fn http_code(code: Code) -> i32 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::DeadlineExceeded => 408,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::FailedPrecondition => 412,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        _ => 500,
    }
}

fn reason_phrase(code: i32) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // go-micro's Error() is the JSON; serialising these four fields cannot fail.
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => write!(f, "{}: {} ({})", self.id, self.detail, self.code),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        if let Ok(parsed) = serde_json::from_str::<Error>(status.message()) {
            if parsed.code > 0 {
                return parsed;
            }
        }
        Error::new(
            "go.micro.client",
            status.message(),
            http_code(status.code()),
        )
    }
}

impl From<micro_registry::Error> for Error {
    fn from(err: micro_registry::Error) -> Self {
        match err {
            micro_registry::Error::NotFound(name) => {
                // go-micro's selector error, word for word.
                Error::internal_server_error(
                    "go.micro.client",
                    format!("service {name}: not found"),
                )
            }
            other => Error::internal_server_error("go.micro.registry", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_micro_json_is_read_back() {
        let go = r#"{"id":"go.micro.client","code":500,"detail":"service go.micro.srv.vessel: not found","status":"Internal Server Error"}"#;
        let err = Error::parse(go);
        assert_eq!(err.code, 500);
        assert_eq!(err.to_string(), go);
    }

    #[test]
    fn plain_status_becomes_client_error() {
        let err = Error::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(err.id, "go.micro.client");
        assert_eq!(err.code, 503);
        assert_eq!(err.detail, "connection refused");
    }

    #[test]
    fn every_mapped_code_round_trips() {
        for code in [400, 401, 403, 404, 408, 409, 412, 429, 499, 500, 501, 503] {
            let err = Error::new("x", "y", code);
            assert_eq!(http_code(err.grpc_code()), code, "{code}");
            assert_eq!(Error::from(tonic::Status::from(err.clone())), err);
        }
    }

    #[test]
    fn garbage_text_is_a_detail() {
        assert_eq!(Error::parse("{oops").detail, "{oops");
        assert_eq!(Error::parse("{}").detail, "{}");
    }
}
