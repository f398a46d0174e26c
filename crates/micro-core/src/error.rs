//! micro's error: go-micro's `{id, code, detail, status}`, and how it crosses gRPC.
//!
//! # Asking what an error is
//!
//! [`Error::kind`] names the code as an [`ErrorKind`], as `std::io::Error::kind` and
//! `tonic::Status::code` do:
//!
//! ```
//! use micro_core::{Error, ErrorKind};
//!
//! fn describe(err: &Error) -> &'static str {
//!     match err.kind() {
//!         ErrorKind::NotFound => "no such thing",
//!         ErrorKind::Timeout => "too slow; try a longer timeout",
//!         ErrorKind::ServiceUnavailable => "no node could answer; try later",
//!         _ => "failed",
//!     }
//! }
//!
//! assert_eq!(describe(&Error::not_found("go.micro.srv.vessel", "no vessel")), "no such thing");
//! assert_eq!(describe(&Error::new("go.micro.client", "call timeout", 408)), "too slow; try a longer timeout");
//! ```
//!
//! Where a call fails, the caller sees: 408 ([`ErrorKind::Timeout`]) when its deadline
//! passed; 503 ([`ErrorKind::ServiceUnavailable`]) when no node of the service could
//! be reached; 500 ([`ErrorKind::InternalServerError`]) with `service <name>: not
//! found` when the registry knows no node of the service (go-micro's wording and
//! code); otherwise what the handler returned.
//!
//! # Mapping to and from gRPC
//!
//! A handler's [`Error`] becomes a `tonic::Status` whose code comes from the table
//! below and whose message is the error's JSON, exactly as go-micro's gRPC server writes
//! it, so Go and Rust callers read the same error:
//!
//! | `code` (HTTP style) | [`ErrorKind`] (constructor) | gRPC code |
//! |---|---|---|
//! | 400 | [`BadRequest`](ErrorKind::BadRequest) ([`Error::bad_request`]) | INVALID_ARGUMENT |
//! | 401 | [`Unauthorized`](ErrorKind::Unauthorized) ([`Error::unauthorized`]) | UNAUTHENTICATED |
//! | 403 | [`Forbidden`](ErrorKind::Forbidden) ([`Error::forbidden`]) | PERMISSION_DENIED |
//! | 404 | [`NotFound`](ErrorKind::NotFound) ([`Error::not_found`]) | NOT_FOUND |
//! | 405 | [`MethodNotAllowed`](ErrorKind::MethodNotAllowed) ([`Error::method_not_allowed`]) | UNKNOWN |
//! | 408 | [`Timeout`](ErrorKind::Timeout) ([`Error::timeout`]) | DEADLINE_EXCEEDED |
//! | 409 | [`Conflict`](ErrorKind::Conflict) ([`Error::conflict`]) | ALREADY_EXISTS |
//! | 412 | [`PreconditionFailed`](ErrorKind::PreconditionFailed) | FAILED_PRECONDITION |
//! | 429 | [`TooManyRequests`](ErrorKind::TooManyRequests) | RESOURCE_EXHAUSTED |
//! | 499 | [`Cancelled`](ErrorKind::Cancelled) | CANCELLED |
//! | 500 | [`InternalServerError`](ErrorKind::InternalServerError) ([`Error::internal_server_error`]) | INTERNAL |
//! | 501 | [`NotImplemented`](ErrorKind::NotImplemented) | UNIMPLEMENTED |
//! | 503 | [`ServiceUnavailable`](ErrorKind::ServiceUnavailable) ([`Error::service_unavailable`]) | UNAVAILABLE |
//! | other | [`Other`](ErrorKind::Other) | UNKNOWN |
//!
//! The constructors are go-micro's (`errors.BadRequest`, ..., `errors.InternalServerError`),
//! plus `service_unavailable`; 405 has no gRPC code in go-micro's table either.
//!
//! Going back, a status whose message is micro/go-micro error JSON with a code is read
//! as that error (so a 405 comes back as 405); any other status becomes
//! `{id: "go.micro.client", code: <from the table, reversed; OUT_OF_RANGE is 400,
//! ABORTED 409, the rest 500>, detail: <message>}`.

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

/// What an [`Error`] is, by its HTTP-style code: [`Error::kind`].
///
/// Each kind has one code ([`ErrorKind::code`]) and one gRPC code
/// ([`ErrorKind::grpc_code`]); see the [module docs](self) for the table. More kinds may
/// be added (the enum is `#[non_exhaustive]`): match with a `_` arm.
///
/// ```
/// use micro_core::{Error, ErrorKind};
///
/// let err = Error::timeout("go.micro.client", "call timeout: deadline exceeded");
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert_eq!(ErrorKind::Timeout.code(), Some(408));
/// assert_eq!(ErrorKind::Timeout.grpc_code(), tonic::Code::DeadlineExceeded);
/// assert_eq!(ErrorKind::from_code(418), ErrorKind::Other);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400, gRPC INVALID_ARGUMENT: the request is wrong (go-micro's `errors.BadRequest`).
    BadRequest,
    /// 401, gRPC UNAUTHENTICATED: no or bad credentials (`errors.Unauthorized`).
    Unauthorized,
    /// 403, gRPC PERMISSION_DENIED: not allowed (`errors.Forbidden`).
    Forbidden,
    /// 404, gRPC NOT_FOUND: what was asked for does not exist (`errors.NotFound`).
    NotFound,
    /// 405, gRPC UNKNOWN: the method is not allowed (`errors.MethodNotAllowed`).
    MethodNotAllowed,
    /// 408, gRPC DEADLINE_EXCEEDED: the deadline passed (`errors.Timeout`).
    Timeout,
    /// 409, gRPC ALREADY_EXISTS (and ABORTED, read back): a conflict with the
    /// current state (`errors.Conflict`).
    Conflict,
    /// 412, gRPC FAILED_PRECONDITION: the system is not in a state to do it.
    PreconditionFailed,
    /// 429, gRPC RESOURCE_EXHAUSTED: too many requests, or a message over the size
    /// limit.
    TooManyRequests,
    /// 499, gRPC CANCELLED: the caller went away.
    Cancelled,
    /// 500, gRPC INTERNAL (and any gRPC code not in the table, read back):
    /// something failed inside (`errors.InternalServerError`). Also go-micro's code
    /// for `service <name>: not found`, when the registry knows no node of a service.
    InternalServerError,
    /// 501, gRPC UNIMPLEMENTED: the method is not served.
    NotImplemented,
    /// 503, gRPC UNAVAILABLE: the service cannot answer now, or none of its nodes
    /// could be reached.
    ServiceUnavailable,
    /// Any other code (0, 418, 502, ...), gRPC UNKNOWN: read [`Error::code`].
    Other,
}

impl ErrorKind {
    /// The kind of an HTTP-style code: [`ErrorKind::Other`] for codes not in the table.
    pub fn from_code(code: i32) -> Self {
        match code {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::Timeout,
            409 => Self::Conflict,
            412 => Self::PreconditionFailed,
            429 => Self::TooManyRequests,
            499 => Self::Cancelled,
            500 => Self::InternalServerError,
            501 => Self::NotImplemented,
            503 => Self::ServiceUnavailable,
            _ => Self::Other,
        }
    }

    /// The HTTP-style code of this kind (`None` for [`ErrorKind::Other`]).
    pub fn code(self) -> Option<i32> {
        Some(match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Timeout => 408,
            Self::Conflict => 409,
            Self::PreconditionFailed => 412,
            Self::TooManyRequests => 429,
            Self::Cancelled => 499,
            Self::InternalServerError => 500,
            Self::NotImplemented => 501,
            Self::ServiceUnavailable => 503,
            Self::Other => return None,
        })
    }

    /// The gRPC code an error of this kind is sent with (go-micro's table).
    pub fn grpc_code(self) -> Code {
        match self {
            Self::BadRequest => Code::InvalidArgument,
            Self::Unauthorized => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::Timeout => Code::DeadlineExceeded,
            Self::Conflict => Code::AlreadyExists,
            Self::PreconditionFailed => Code::FailedPrecondition,
            Self::TooManyRequests => Code::ResourceExhausted,
            Self::Cancelled => Code::Cancelled,
            Self::InternalServerError => Code::Internal,
            Self::NotImplemented => Code::Unimplemented,
            Self::ServiceUnavailable => Code::Unavailable,
            Self::MethodNotAllowed | Self::Other => Code::Unknown,
        }
    }
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

    /// What this error is, by its code (see [`ErrorKind`]).
    ///
    /// ```
    /// use micro_core::{Error, ErrorKind};
    ///
    /// let err = Error::from(tonic::Status::unavailable("connection refused"));
    /// assert_eq!(err.kind(), ErrorKind::ServiceUnavailable);
    /// assert_eq!(err.code, 503);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_code(self.code)
    }

    /// The gRPC code for this error's HTTP-style code (OK for 200, else
    /// [`ErrorKind::grpc_code`]).
    pub fn grpc_code(&self) -> Code {
        if self.code == 200 {
            return Code::Ok;
        }
        self.kind().grpc_code()
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
    fn every_kind_has_its_code_and_back() {
        let kinds = [
            (ErrorKind::BadRequest, 400, Code::InvalidArgument),
            (ErrorKind::Unauthorized, 401, Code::Unauthenticated),
            (ErrorKind::Forbidden, 403, Code::PermissionDenied),
            (ErrorKind::NotFound, 404, Code::NotFound),
            (ErrorKind::MethodNotAllowed, 405, Code::Unknown),
            (ErrorKind::Timeout, 408, Code::DeadlineExceeded),
            (ErrorKind::Conflict, 409, Code::AlreadyExists),
            (ErrorKind::PreconditionFailed, 412, Code::FailedPrecondition),
            (ErrorKind::TooManyRequests, 429, Code::ResourceExhausted),
            (ErrorKind::Cancelled, 499, Code::Cancelled),
            (ErrorKind::InternalServerError, 500, Code::Internal),
            (ErrorKind::NotImplemented, 501, Code::Unimplemented),
            (ErrorKind::ServiceUnavailable, 503, Code::Unavailable),
        ];
        for (kind, code, grpc) in kinds {
            assert_eq!(kind.code(), Some(code), "{kind:?}");
            assert_eq!(ErrorKind::from_code(code), kind, "{code}");
            assert_eq!(kind.grpc_code(), grpc, "{kind:?}");
            let err = Error::new("x", "y", code);
            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.grpc_code(), grpc, "{code}");
            // Through the wire and back, the kind stays.
            assert_eq!(Error::from(tonic::Status::from(err)).kind(), kind, "{code}");
            assert!(!reason_phrase(code).is_empty(), "{code}");
        }
        for code in [0, 200, 418, 502, 504, -1] {
            assert_eq!(ErrorKind::from_code(code), ErrorKind::Other, "{code}");
        }
        assert_eq!(ErrorKind::Other.code(), None);
        assert_eq!(ErrorKind::Other.grpc_code(), Code::Unknown);
        assert_eq!(Error::new("x", "y", 200).grpc_code(), Code::Ok);
    }

    #[test]
    fn constructors_give_go_micros_kinds() {
        let cases = [
            (Error::bad_request("x", "y"), ErrorKind::BadRequest),
            (Error::unauthorized("x", "y"), ErrorKind::Unauthorized),
            (Error::forbidden("x", "y"), ErrorKind::Forbidden),
            (Error::not_found("x", "y"), ErrorKind::NotFound),
            (
                Error::method_not_allowed("x", "y"),
                ErrorKind::MethodNotAllowed,
            ),
            (Error::timeout("x", "y"), ErrorKind::Timeout),
            (Error::conflict("x", "y"), ErrorKind::Conflict),
            (
                Error::internal_server_error("x", "y"),
                ErrorKind::InternalServerError,
            ),
            (
                Error::service_unavailable("x", "y"),
                ErrorKind::ServiceUnavailable,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }

    #[test]
    fn statuses_from_other_servers_have_kinds() {
        let cases = [
            (tonic::Status::not_found("no"), ErrorKind::NotFound),
            (tonic::Status::deadline_exceeded("late"), ErrorKind::Timeout),
            (
                tonic::Status::unavailable("down"),
                ErrorKind::ServiceUnavailable,
            ),
            (tonic::Status::aborted("race"), ErrorKind::Conflict),
            (tonic::Status::out_of_range("far"), ErrorKind::BadRequest),
            (
                tonic::Status::data_loss("gone"),
                ErrorKind::InternalServerError,
            ),
            (tonic::Status::cancelled("bye"), ErrorKind::Cancelled),
        ];
        for (status, kind) in cases {
            assert_eq!(Error::from(status).kind(), kind, "{kind:?}");
        }
        // A registry that knows no node of the service: go-micro's 500.
        let err = Error::from(micro_registry::Error::NotFound("go.micro.srv.x".into()));
        assert_eq!(err.kind(), ErrorKind::InternalServerError);
    }

    #[test]
    fn garbage_text_is_a_detail() {
        assert_eq!(Error::parse("{oops").detail, "{oops");
        assert_eq!(Error::parse("{}").detail, "{}");
    }
}
