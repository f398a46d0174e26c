//! The `Codec` trait: how messages become bytes, and the bridge to tonic.

use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::CodecError;

/// Encodes and decodes messages of type `M` (go-micro's `codec.Marshaler`).
///
/// A codec is a small value (usually a unit struct) implemented for every message
/// type it can handle: [`ProtoCodec`] for every prost message.
pub trait Codec<M>: Clone + Send + Sync + fmt::Debug + 'static {
    /// The gRPC content subtype: `proto` gives `application/grpc+proto`.
    fn name(&self) -> &'static str;
    /// Writes `message` to `dst`.
    fn encode(&self, message: &M, dst: &mut impl BufMut) -> Result<(), CodecError>;
    /// Reads one message from all of `src`.
    fn decode(&self, src: &mut impl Buf) -> Result<M, CodecError>;
}

/// Protocol Buffers, the default codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtoCodec;

impl<M> Codec<M> for ProtoCodec
where
    M: prost::Message + Default + 'static,
{
    fn name(&self) -> &'static str {
        "proto"
    }

    fn encode(&self, message: &M, dst: &mut impl BufMut) -> Result<(), CodecError> {
        message.encode(dst).map_err(|e| CodecError::Encode {
            codec: "proto",
            reason: e.to_string(),
        })
    }

    fn decode(&self, src: &mut impl Buf) -> Result<M, CodecError> {
        M::decode(src).map_err(|e| CodecError::Decode {
            codec: "proto",
            reason: e.to_string(),
        })
    }
}

/// JSON (gRPC content subtype `json`, `application/grpc+json`), for every serde type.
///
/// Field names are the Rust (= proto) names, as go-micro's gRPC server writes them
/// (`UseProtoNames`); enums are numbers and 64-bit integers JSON numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

impl<M> Codec<M> for JsonCodec
where
    M: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, message: &M, dst: &mut impl BufMut) -> Result<(), CodecError> {
        serde_json::to_writer(dst.writer(), message).map_err(|e| CodecError::Encode {
            codec: "json",
            reason: e.to_string(),
        })
    }

    fn decode(&self, src: &mut impl Buf) -> Result<M, CodecError> {
        serde_json::from_reader(src.reader()).map_err(|e| CodecError::Decode {
            codec: "json",
            reason: e.to_string(),
        })
    }
}

impl From<CodecError> for Status {
    fn from(e: CodecError) -> Self {
        // gRPC's rule: a message that cannot be parsed is INTERNAL.
        Status::internal(e.to_string())
    }
}

/// Adapts a micro [`Codec`] to tonic's codec, encoding `E` and decoding `D`.
pub struct TonicCodec<C, E, D> {
    codec: C,
    _types: PhantomData<fn(E) -> D>,
}

impl<C, E, D> TonicCodec<C, E, D> {
    /// Wraps `codec`.
    pub fn new(codec: C) -> Self {
        Self {
            codec,
            _types: PhantomData,
        }
    }
}

impl<C: fmt::Debug, E, D> fmt::Debug for TonicCodec<C, E, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TonicCodec").field(&self.codec).finish()
    }
}

impl<C: Default, E, D> Default for TonicCodec<C, E, D> {
    fn default() -> Self {
        Self::new(C::default())
    }
}

impl<C, E, D> tonic::codec::Codec for TonicCodec<C, E, D>
where
    C: Codec<E> + Codec<D>,
    E: Send + 'static,
    D: Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = CodecEncoder<C, E>;
    type Decoder = CodecDecoder<C, D>;

    fn encoder(&mut self) -> Self::Encoder {
        CodecEncoder(self.codec.clone(), PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        CodecDecoder(self.codec.clone(), PhantomData)
    }
}

/// tonic encoder half of [`TonicCodec`].
pub struct CodecEncoder<C, E>(C, PhantomData<fn(E)>);

impl<C: fmt::Debug, E> fmt::Debug for CodecEncoder<C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CodecEncoder").field(&self.0).finish()
    }
}

impl<C: Codec<E>, E: Send + 'static> Encoder for CodecEncoder<C, E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.0.encode(&item, dst).map_err(Status::from)
    }
}

/// tonic decoder half of [`TonicCodec`].
pub struct CodecDecoder<C, D>(C, PhantomData<fn() -> D>);

impl<C: fmt::Debug, D> fmt::Debug for CodecDecoder<C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CodecDecoder").field(&self.0).finish()
    }
}

impl<C: Codec<D>, D: Send + 'static> Decoder for CodecDecoder<C, D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        self.0.decode(src).map(Some).map_err(Status::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Spec {
        #[prost(int32, tag = "1")]
        capacity: i32,
        #[prost(string, tag = "2")]
        name: String,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: String,
        weight: i32,
    }

    #[test]
    fn json_round_trips_and_rejects_garbage() {
        let order = Order {
            id: "c1".into(),
            weight: 55000,
        };
        let mut buf = Vec::new();
        JsonCodec.encode(&order, &mut buf).unwrap();
        assert_eq!(buf, br#"{"id":"c1","weight":55000}"#);
        let back: Order = JsonCodec.decode(&mut buf.as_slice()).unwrap();
        assert_eq!(back, order);
        let err =
            <JsonCodec as Codec<Order>>::decode(&JsonCodec, &mut &b"{\"id\":"[..]).unwrap_err();
        assert!(matches!(err, CodecError::Decode { codec: "json", .. }));
    }

    #[test]
    fn proto_round_trips() {
        let spec = Spec {
            capacity: 3,
            name: "x".into(),
        };
        let mut buf = Vec::new();
        ProtoCodec.encode(&spec, &mut buf).unwrap();
        let back: Spec = ProtoCodec.decode(&mut buf.as_slice()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn malformed_protobuf_is_an_error_not_a_panic() {
        // Field 1, varint type, then a truncated varint.
        let mut bytes: &[u8] = &[0x08, 0xff];
        let err = <ProtoCodec as Codec<Spec>>::decode(&ProtoCodec, &mut bytes).unwrap_err();
        assert!(matches!(err, CodecError::Decode { codec: "proto", .. }));
        assert_eq!(Status::from(err).code(), tonic::Code::Internal);
    }
}
