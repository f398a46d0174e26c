//! A gRPC client that is not micro's: tonic's own client over a tonic channel, with
//! bytes in and out, so tests see statuses exactly as they are on the wire (micro's
//! client maps some of them).

// Each test file compiles this module and uses only part of it.
#![allow(dead_code)]

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

/// Passes message bytes through as they are.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len).to_vec()))
    }
}

/// A channel to `address` (`host:port`), connected.
pub(crate) async fn channel(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap_or_else(|e| panic!("endpoint {address}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {address}: {e}"))
}

fn grpc(channel: Channel) -> tonic::client::Grpc<Channel> {
    // No limits on this side: the server's are under test.
    tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn path(path: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(path)
}

/// One unary call of `path` with `body`, as encoded bytes.
pub(crate) async fn unary(
    channel: Channel,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = grpc(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(tonic::Request::new(body), path(method), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// One client-streaming call of `path` with `bodies`.
pub(crate) async fn client_streaming(
    channel: Channel,
    method: &'static str,
    bodies: Vec<Vec<u8>>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = grpc(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.client_streaming(
        tonic::Request::new(futures::stream::iter(bodies)),
        path(method),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}
