//! What client and server share about messages: the [`Message`] trait (a protobuf
//! message that says whether it has a JSON form), the codec that encodes it as JSON,
//! and the size limit.
//!
//! Generated messages implement [`Message`] (with a JSON form unless the build turned
//! serde off). A message written by hand implements it in one line:
//!
//! ```
//! #[derive(Clone, PartialEq, micro_core::prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize)]
//! #[serde(crate = "micro_core::serde")]
//! struct Ping {
//!     #[prost(string, tag = "1")]
//!     text: String,
//! }
//! micro_core::json_message!(Ping);
//!
//! #[derive(Clone, PartialEq, micro_core::prost::Message)]
//! struct Raw {
//!     #[prost(bytes = "vec", tag = "1")]
//!     data: Vec<u8>,
//! }
//! impl micro_core::Message for Raw {} // protobuf only
//!
//! use micro_core::Message;
//! assert!(Ping::HAS_JSON && !Raw::HAS_JSON);
//! ```

use bytes::{Buf, BufMut};
use micro_transport::{Codec, CodecError};

/// gRPC's default message size limit, in each direction.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Boxed errors, as tower middleware returns them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A message micro can send: protobuf always, JSON when [`Message::HAS_JSON`].
///
/// The JSON methods' defaults report that the message has no JSON form; a call or
/// publish with JSON then fails with a clear 400 instead of sending anything.
pub trait Message: prost::Message + Default + Send + Sync + 'static {
    /// Whether [`Message::write_json`] and [`Message::read_json`] work.
    const HAS_JSON: bool = false;

    /// Writes the message as JSON.
    fn write_json(&self, _out: &mut dyn std::io::Write) -> Result<(), CodecError> {
        Err(no_json::<Self>("json"))
    }

    /// Reads a message from JSON.
    fn read_json(_src: &mut dyn std::io::Read) -> Result<Self, CodecError> {
        Err(no_json::<Self>("json"))
    }
}

fn no_json<M>(codec: &'static str) -> CodecError {
    CodecError::Encode {
        codec,
        reason: format!(
            "{} has no JSON form (generate it with serde: micro_codegen::Builder::serde(true))",
            std::any::type_name::<M>()
        ),
    }
}

/// [`Message::write_json`] for a serde type: what [`json_message!`](crate::json_message) uses.
pub fn write_json<M: serde::Serialize>(
    message: &M,
    out: &mut dyn std::io::Write,
) -> Result<(), CodecError> {
    serde_json::to_writer(out, message).map_err(|e| CodecError::Encode {
        codec: "json",
        reason: e.to_string(),
    })
}

/// [`Message::read_json`] for a serde type: what [`json_message!`](crate::json_message) uses.
pub fn read_json<M: serde::de::DeserializeOwned>(
    src: &mut dyn std::io::Read,
) -> Result<M, CodecError> {
    serde_json::from_reader(src).map_err(|e| CodecError::Decode {
        codec: "json",
        reason: e.to_string(),
    })
}

/// Implements [`Message`] with a JSON form for types that are both prost messages
/// and serde types: `micro_core::json_message!(Request, Response);`
#[macro_export]
macro_rules! json_message {
    ($($message:ty),+ $(,)?) => {
        $(
            impl $crate::Message for $message {
                const HAS_JSON: bool = true;
                fn write_json(
                    &self,
                    out: &mut dyn ::std::io::Write,
                ) -> ::core::result::Result<(), $crate::transport::CodecError> {
                    $crate::codec::write_json(self, out)
                }
                fn read_json(
                    src: &mut dyn ::std::io::Read,
                ) -> ::core::result::Result<Self, $crate::transport::CodecError> {
                    $crate::codec::read_json(src)
                }
            }
        )+
    };
}

// Well-known types and scalars that generated code may use as RPC messages. Generated
// code cannot implement a trait of this crate for types of another, so they are here:
// with JSON as pbjson-types (the serde build's types), protobuf only as prost-types.
json_message!(
    pbjson_types::Empty,
    pbjson_types::Timestamp,
    pbjson_types::Duration,
    pbjson_types::Any,
    pbjson_types::Struct,
    pbjson_types::Value,
    pbjson_types::ListValue,
    pbjson_types::FieldMask,
    String,
    bool,
    i32,
    i64,
    u32,
    u64,
    f32,
    f64,
);

// `()` is prost's Empty, and serde would write it as `null`, not `{}`.
impl Message for () {}
impl Message for Vec<u8> {}
impl Message for bytes::Bytes {}
impl Message for prost_types::Timestamp {}
impl Message for prost_types::Duration {}
impl Message for prost_types::Any {}
impl Message for prost_types::Struct {}
impl Message for prost_types::Value {}
impl Message for prost_types::ListValue {}
impl Message for prost_types::FieldMask {}

/// JSON (`application/grpc+json`) for every [`Message`] with a JSON form; for the
/// others every encode and decode is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageJsonCodec;

impl<M: Message> Codec<M> for MessageJsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, message: &M, dst: &mut impl BufMut) -> Result<(), CodecError> {
        message.write_json(&mut dst.writer())
    }

    fn decode(&self, src: &mut impl Buf) -> Result<M, CodecError> {
        M::read_json(&mut src.reader())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    struct Ping {
        #[prost(string, tag = "1")]
        text: String,
    }
    crate::json_message!(Ping);

    #[derive(Clone, PartialEq, prost::Message)]
    struct Raw {
        #[prost(string, tag = "1")]
        text: String,
    }
    impl Message for Raw {}

    #[test]
    fn json_form_round_trips_and_a_protobuf_only_message_says_so() {
        let mut buf = Vec::new();
        Codec::<Ping>::encode(&MessageJsonCodec, &Ping { text: "hi".into() }, &mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(buf, br#"{"text":"hi"}"#);
        let back: Ping = MessageJsonCodec
            .decode(&mut buf.as_slice())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.text, "hi");

        let err = Codec::<Raw>::encode(&MessageJsonCodec, &Raw::default(), &mut buf)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("has no JSON form"), "{err}");
        let bad: Result<Ping, _> = MessageJsonCodec.decode(&mut &b"{\"text\":"[..]);
        assert!(matches!(bad, Err(CodecError::Decode { codec: "json", .. })));
    }
}
