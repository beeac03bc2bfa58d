//! One connection to the controller, run as a task: connect (TLS against
//! the CA bundle, read fresh, as is the token), say Hello with the token in
//! the request metadata, then cast every command into the stream client
//! until the stream ends.

use std::time::Duration;

use ractor::ActorRef;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vpblu_messages::{Envelope, Generation};
use vpblu_proto as pb;
use vpblu_proto::mesh::mesh_client::MeshClient;
use vpblu_runtime::error_chain;
use zeroize::Zeroizing;

use super::security::read_token;
use super::{ClientConfig, ConnectError, StreamClientMsg, StreamSecurity};

/// HTTP/2 pings find a controller that vanished without closing the
/// connection (a failed-over leader's node going dark).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Acks and reports queued towards the controller.
const OUTBOUND_CAPACITY: usize = 1024;

/// Runs stream `epoch` to its end and tells the client why it ended.
pub(super) async fn run(
    client: ActorRef<StreamClientMsg>,
    epoch: u64,
    endpoint: String,
    hello: pb::DaemonMessage,
    config: ClientConfig,
    security: StreamSecurity,
) {
    let reason = match open_and_read(&client, epoch, endpoint, hello, &config, &security).await {
        Ok(()) => return, // the client is gone
        Err(e) => error_chain(&e),
    };
    let _client_gone = client.cast(StreamClientMsg::Disconnected { epoch, reason });
}

async fn open_and_read(
    client: &ActorRef<StreamClientMsg>,
    epoch: u64,
    endpoint: String,
    hello: pb::DaemonMessage,
    config: &ClientConfig,
    security: &StreamSecurity,
) -> Result<(), ConnectError> {
    security.check_endpoint(&endpoint).map_err(ConnectError::Scheme)?;
    let mut channel = Endpoint::from_shared(endpoint.clone())
        .map_err(|source| ConnectError::Endpoint { endpoint: endpoint.clone(), source })?;
    if let Some(tls) = &security.tls {
        let ca = tokio::fs::read(&tls.ca_file)
            .await
            .map_err(|source| ConnectError::CaFile { path: tls.ca_file.clone(), source })?;
        let tls_config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name(&tls.server_name);
        channel = channel.tls_config(tls_config).map_err(|source| ConnectError::Tls {
            server_name: tls.server_name.clone(),
            ca_file: tls.ca_file.clone(),
            source,
        })?;
    }
    let mut request = Request::new(());
    if let Some(path) = &security.token_file {
        let token = read_token(path).await?;
        let bearer = Zeroizing::new(format!("Bearer {}", token.expose_secret()));
        let mut value = MetadataValue::try_from(bearer.as_str())
            .map_err(|_| ConnectError::Token(super::security::TokenError::Invalid(path.clone())))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
    }
    let channel = channel
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|source| ConnectError::Connect { endpoint, source })?;
    let mut rpc = MeshClient::new(channel).max_decoding_message_size(config.max_message_size);
    let (outbound, requests) = mpsc::channel(OUTBOUND_CAPACITY);
    // The queue is empty and has room: the Hello goes first.
    let _never_full = outbound.try_send(hello);
    // The controller answers once it has read and accepted the Hello.
    let (metadata, extensions, ()) = request.into_parts();
    let request = Request::from_parts(metadata, extensions, ReceiverStream::new(requests));
    let response = tokio::time::timeout(config.connect_timeout, rpc.session(request))
        .await
        .map_err(|_| ConnectError::HelloTimeout(config.connect_timeout))??;
    let mut inbound = response.into_inner();
    // From here the client holds the only sender: when it drops it, the
    // request half ends and the controller closes the stream.
    if client.cast(StreamClientMsg::Connected { epoch, outbound }).is_err() {
        return Ok(());
    }
    loop {
        let Some(message) = inbound.message().await? else {
            return Err(ConnectError::Ended);
        };
        let generation = Generation(message.generation);
        let body = Envelope::try_from(&message).map(|envelope| envelope.body);
        if client.cast(StreamClientMsg::Received { epoch, generation, body }).is_err() {
            return Ok(());
        }
    }
}
