//! The `Mesh` service as tonic serves it, except for how the controller's
//! half is framed.
//!
//! tonic's generated server encodes a response stream into one buffer per
//! stream and keeps that buffer's capacity for the stream's life: the
//! largest message it ever framed. A node's first SyncState is its largest
//! (a 1000-peer full mesh is about 90 KB on the wire), so every stream held
//! about 128 KB it would never need again, 130 MB at 1000 nodes. Here each
//! message is framed (gRPC's 5-byte prefix, then the protobuf) in an
//! allocation of exactly its size, freed once HTTP/2 has written it. The
//! daemon's half is decoded by tonic as before; the session itself is
//! [`MeshService::session`], unchanged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codec::Codec;
use tonic::codegen::http::{self, HeaderMap, header};
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::NamedService;
use tonic::{Code, Request, Status, Streaming};
use tonic_prost::ProstCodec;
use vpblu_proto as pb;
use vpblu_proto::mesh::mesh_server::Mesh;

use super::accept::MeshService;

/// The one method of the service.
const SESSION_PATH: &str = "/vpblu.mesh.v1.Mesh/Session";

/// gRPC's per-message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// The `Mesh` service for tonic's router.
#[derive(Clone, Debug)]
pub(crate) struct MeshRoute {
    service: Arc<MeshService>,
    max_decoding_message_size: usize,
}

impl MeshRoute {
    /// Serves `service`, refusing daemon messages larger than
    /// `max_decoding_message_size` (the stream closes with
    /// `OutOfRange`).
    pub(crate) fn new(service: MeshService, max_decoding_message_size: usize) -> Self {
        MeshRoute { service: Arc::new(service), max_decoding_message_size }
    }
}

impl NamedService for MeshRoute {
    const NAME: &'static str = "vpblu.mesh.v1.Mesh";
}

impl Service<http::Request<Body>> for MeshRoute {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = Arc::clone(&self.service);
        let max = self.max_decoding_message_size;
        Box::pin(async move { Ok(session(&service, request, max).await) })
    }
}

/// One `Session` call, answered as tonic's generated server would.
async fn session(service: &MeshService, request: http::Request<Body>, max: usize) -> http::Response<Body> {
    if request.uri().path() != SESSION_PATH {
        let unknown = format!("no method {} here: this server serves {SESSION_PATH}", request.uri().path());
        return Status::new(Code::Unimplemented, unknown).into_http();
    }
    if let Some(encoding) = request.headers().get("grpc-encoding").filter(|e| *e != "identity") {
        let refused =
            format!("message compression {encoding:?} is not supported: send uncompressed messages");
        return Status::unimplemented(refused).into_http();
    }
    let decoder = ProstCodec::<pb::ControllerMessage, pb::DaemonMessage>::default().decoder();
    let request = request.map(|body| Streaming::new_request(decoder, body, None, Some(max)));
    let response = match service.session(Request::from_http(request)).await {
        Ok(response) => response,
        Err(status) => return status.into_http(),
    };
    let (metadata, messages, extensions) = response.into_parts();
    let mut response = http::Response::new(Body::new(Framed { messages, done: false }));
    *response.headers_mut() = metadata.into_headers();
    response.headers_mut().insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    *response.extensions_mut() = extensions;
    response
}

/// The controller's half: each message framed on its own, then the
/// trailers (`grpc-status` 0 when the stream ends, the status it was
/// closed with otherwise).
struct Framed {
    messages: <MeshService as Mesh>::SessionStream,
    done: bool,
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match self.messages.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(message))) => Frame::data(frame(&message)),
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                Frame::trailers(trailers(&status))
            }
            Poll::Ready(None) => {
                self.done = true;
                Frame::trailers(trailers(&Status::ok("")))
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// `message` with its gRPC prefix, in a buffer of exactly that size.
fn frame(message: &pb::ControllerMessage) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    // Far below 4 GiB: the largest state is a few MB.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// The trailers that end a stream with `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Err(unsendable) = status.add_header(&mut map) {
        // A message that cannot be a header value: send the code alone.
        map.clear();
        let _bare = Status::new(unsendable.code(), "").add_header(&mut map);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_the_prefix_and_the_message_in_exactly_its_size() {
        let message = pb::ControllerMessage { generation: 7, ..pb::ControllerMessage::default() };
        let framed = frame(&message);
        let len = message.encoded_len();
        assert_eq!(framed.len(), PREFIX + len);
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize, len);
        assert_eq!(pb::ControllerMessage::decode(&framed[PREFIX..]).expect("decodes"), message);
    }

    #[test]
    fn trailers_carry_the_code_and_the_message() {
        let map = trailers(&Status::resource_exhausted("the daemon did not read its stream; reconnect"));
        assert_eq!(map.get("grpc-status").map(|v| v.to_str().unwrap()), Some("8"));
        assert!(map.get("grpc-message").is_some());
        let ok = trailers(&Status::ok(""));
        assert_eq!(ok.get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"));
    }
}
