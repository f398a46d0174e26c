//! Transport and codec errors.

use std::io;

/// A transport failure: listening, dialing or accepting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The address is not one this transport understands.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// Why it is not usable.
        reason: String,
    },
    /// Binding the listening address failed.
    #[error("listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Connecting to a peer failed.
    #[error("dial {address}: {source}")]
    Dial {
        /// The peer address.
        address: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the dial timeout.
    #[error("dial {address}: timed out after {timeout:?}")]
    DialTimeout {
        /// The peer address.
        address: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// TLS could not be set up (bad PEM, mismatched key, missing identity).
    #[error("tls: {0}")]
    Tls(String),
    /// Accepting a connection failed.
    #[error("accept: {0}")]
    Accept(#[source] io::Error),
}

/// A codec failure: a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The message could not be written.
    #[error("encode {codec}: {reason}")]
    Encode {
        /// The codec's name.
        codec: &'static str,
        /// What failed.
        reason: String,
    },
    /// The bytes are not a valid message.
    #[error("decode {codec}: {reason}")]
    Decode {
        /// The codec's name.
        codec: &'static str,
        /// What failed.
        reason: String,
    },
}
