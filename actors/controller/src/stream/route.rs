//! The `Mesh` service as tonic serves it, except for how the controller's
//! half is framed.
//!
//! tonic's generated server encodes a response stream into one buffer per
//! stream and keeps that buffer's capacity for the stream's life: the
//! largest message it ever framed. A node's first SyncState is its largest
//! (a 1000-peer full mesh is about 90 KB on the wire), so every stream held
//! about 128 KB it would never need again, 130 MB at 1000 nodes. Here the
//! session's stream yields messages already framed by its node stream
//! (see `encode`: each in an allocation of exactly its size, freed once
//! HTTP/2 has written it, its peers encoded once for all streams). The
//! daemon's half is decoded by tonic as before; the session itself is
//! [`MeshService::session`].

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use tonic::body::Body;
use tonic::codec::Codec;
use tonic::codegen::http::{self, HeaderMap, header};
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::NamedService;
use tonic::{Code, Request, Status, Streaming};
use tonic_prost::ProstCodec;
use vpblu_proto as pb;

use super::accept::{MeshService, SessionStream};

/// The one method of the service.
const SESSION_PATH: &str = "/vpblu.mesh.v1.Mesh/Session";

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
    messages: SessionStream,
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
            Poll::Ready(Some(Ok(framed))) => Frame::data(framed),
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
    fn trailers_carry_the_code_and_the_message() {
        let map = trailers(&Status::resource_exhausted("the daemon did not read its stream; reconnect"));
        assert_eq!(map.get("grpc-status").map(|v| v.to_str().unwrap()), Some("8"));
        assert!(map.get("grpc-message").is_some());
        let ok = trailers(&Status::ok(""));
        assert_eq!(ok.get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"));
    }
}
