//! The gRPC server's security end to end: real TLS handshakes with
//! certificates made here, real gRPC calls, the v1 API's descriptors and
//! its list of methods reserved to services.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body::Frame;
use http_body_util::BodyExt as _;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::grpc::{ClientConfig, GrpcSecurity, GrpcServer, GrpcServerConfig, channel_with};
use crate::grpc_auth::{Caller, GrpcAuthConfig, PlatformClients};
use crate::tls::testing::Ca;
use crate::tls::{ClientCerts, GrpcTlsConfig, Tls};

use telenet_proto::conversations::v1::{CreateWorkspaceRequest, GetWorkspaceRequest};
use telenet_proto::ingress::v1::{GetChannelRequest, ListChannelKindsRequest};
use telenet_proto::media::v1::{UploadHeader, UploadRequest, upload_request};

const WS_A: &str = "0190a0a0-0000-7000-8000-00000000000a";
const WS_B: &str = "0190b0b0-0000-7000-8000-00000000000b";
const SECRET: &str = "platform-secret-of-billing";

// ---------------------------------------------------------------------------
// A server answering every method of a few v1 services with an empty
// message, recording who called and what arrived.

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, String)>>>);

impl Recorder {
    fn calls(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

trait Named: Send + Sync + 'static {
    const NAME: &'static str;
}
struct Members;
impl Named for Members {
    const NAME: &'static str = "telenet.conversations.v1.Members";
}
struct Channels;
impl Named for Channels {
    const NAME: &'static str = "telenet.ingress.v1.Channels";
}
struct Media;
impl Named for Media {
    const NAME: &'static str = "telenet.media.v1.Media";
}

struct Fake<N> {
    recorder: Recorder,
    name: PhantomData<N>,
}

impl<N> Clone for Fake<N> {
    fn clone(&self) -> Self {
        Self {
            recorder: self.recorder.clone(),
            name: PhantomData,
        }
    }
}

impl<N: Named> NamedService for Fake<N> {
    const NAME: &'static str = N::NAME;
}

fn caller_name(caller: Option<&Caller>) -> String {
    match caller {
        Some(Caller::Service(name)) => format!("service:{name}"),
        Some(Caller::Plaintext) => "plaintext".into(),
        Some(Caller::Platform(client)) => format!("platform:{}", client.name),
        None => "none".into(),
    }
}

impl<N: Named> tower::Service<http::Request<Body>> for Fake<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let recorder = self.recorder.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let caller = caller_name(request.extensions().get::<Caller>());
            // Read the whole request as a handler would; a refused message
            // later in a stream ends it with the layer's status.
            if let Err(status) = request.into_body().collect().await {
                return Ok(status.into_http());
            }
            recorder
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((path, caller));
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames: Vec<Result<Frame<Bytes>, Status>> = vec![
                Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(Body::new(body))
                .unwrap_or_default();
            Ok(response)
        })
    }
}

struct Running {
    addr: SocketAddr,
    health_addr: SocketAddr,
    recorder: Recorder,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(security: GrpcSecurity) -> Running {
    let listener = crate::shutdown::bind("127.0.0.1:0").await.expect("bind");
    let health = crate::shutdown::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let health_addr = health.local_addr().expect("addr");
    let recorder = Recorder::default();
    let server = GrpcServer::new(GrpcServerConfig::default())
        .file_descriptor_sets(&[telenet_proto::FILE_DESCRIPTOR_SET])
        .add_service(Fake::<Members> {
            recorder: recorder.clone(),
            name: PhantomData,
        })
        .add_service(Fake::<Channels> {
            recorder: recorder.clone(),
            name: PhantomData,
        })
        .add_service(Fake::<Media> {
            recorder: recorder.clone(),
            name: PhantomData,
        })
        .with_security(
            security
                .internal_only(telenet_proto::access::INTERNAL_ONLY)
                .open_to_platform_clients(telenet_proto::access::OPEN_TO_PLATFORM_CLIENTS),
        )
        .with_health_listener(health);
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(listener, stop.clone()));
    Running {
        addr,
        health_addr,
        recorder,
        stop,
    }
}

// ---------------------------------------------------------------------------
// Certificates and clients

/// A directory of TLS files: a certificate for `names` from `issuer`, and
/// `trusted` as the CA file.
fn tls_files(dir: &Path, issuer: &Ca, names: &[&str], trusted: &Ca) -> GrpcTlsConfig {
    std::fs::create_dir_all(dir).expect("dir");
    let [cert, key, ca] = issuer.write(dir, names);
    std::fs::write(&ca, &trusted.pem).expect("ca");
    GrpcTlsConfig {
        cert_file: cert,
        key_file: key,
        ca_file: ca,
        reload_interval: Duration::from_millis(20),
        allow_plaintext: false,
    }
}

fn load(config: &GrpcTlsConfig, client_certs: ClientCerts) -> Tls {
    Tls::from_config(config, client_certs)
        .expect("loads")
        .expect("configured")
}

/// The server's files: `127.0.0.1` (how tests reach it) and its identity.
fn server_tls(dir: &Path, ca: &Ca, client_certs: ClientCerts) -> Tls {
    load(
        &tls_files(
            &dir.join("server"),
            ca,
            &["127.0.0.1", "contacts.telenet.internal"],
            ca,
        ),
        client_certs,
    )
}

fn client(addr: SocketAddr, tls: &Tls) -> Channel {
    channel_with(
        &format!("https://{addr}"),
        &ClientConfig::default(),
        Some(tls),
    )
    .expect("channel")
}

/// A channel over TLS with `config` (e.g. without a client certificate).
fn raw_tls_channel(addr: SocketAddr, config: rustls::ClientConfig) -> Channel {
    let config = Arc::new(config);
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                .map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_with_connector_lazy(connector)
}

fn without_certificate(trusted: &Ca) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_slice(trusted.pem.as_bytes()).expect("pem"),
        )
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

async fn unary<M: prost::Message + Default + Send + Sync + 'static>(
    channel: &Channel,
    path: &'static str,
    message: M,
    token: Option<&str>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    grpc.unary::<M, (), _>(
        request,
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(drop)
}

async fn upload(
    channel: &Channel,
    messages: Vec<UploadRequest>,
    token: Option<&str>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(tokio_stream::iter(messages));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    grpc.client_streaming::<_, UploadRequest, (), _>(
        request,
        PathAndQuery::from_static("/telenet.media.v1.Media/Upload"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(drop)
}

const GET_WORKSPACE: &str = "/telenet.conversations.v1.Members/GetWorkspace";
const CREATE_WORKSPACE: &str = "/telenet.conversations.v1.Members/CreateWorkspace";
const CREDENTIALS: &str = "/telenet.ingress.v1.Channels/GetChannelCredentials";
const KINDS: &str = "/telenet.ingress.v1.Channels/ListChannelKinds";

fn get_workspace(id: &str) -> GetWorkspaceRequest {
    GetWorkspaceRequest {
        workspace_id: id.into(),
    }
}

fn create_workspace() -> CreateWorkspaceRequest {
    CreateWorkspaceRequest {
        name: "Acme".into(),
        owner_name: "Owner".into(),
        owner_email: "owner@example.com".into(),
    }
}

fn clients_file(dir: &Path, workspaces: &[&str]) -> GrpcAuthConfig {
    let path = dir.join("clients.toml");
    let hash = hex::encode(Sha256::digest(SECRET.as_bytes()));
    let list = workspaces
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &path,
        format!(
            "[[clients]]\nname = \"billing\"\ntoken_sha256 = \"{hash}\"\nworkspaces = [{list}]\n"
        ),
    )
    .expect("write");
    GrpcAuthConfig {
        clients_file: path,
        reload_interval: Duration::from_millis(20),
    }
}

fn platform_clients(config: &GrpcAuthConfig) -> PlatformClients {
    PlatformClients::from_config(config)
        .expect("loads")
        .expect("configured")
}

fn identities() -> [&'static str; 3] {
    ["gateway", "conversations", "dispatch"]
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Mutual TLS

#[tokio::test]
async fn a_service_certificate_from_the_ca_may_call_anything_for_any_workspace() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("telenet test CA");
    let server = serve(GrpcSecurity::tls(
        server_tls(dir.path(), &ca, ClientCerts::Required),
        identities(),
    ))
    .await;
    let gateway = load(
        &tls_files(
            &dir.path().join("gw"),
            &ca,
            &["gateway.telenet.internal"],
            &ca,
        ),
        ClientCerts::Required,
    );
    let channel = client(server.addr, &gateway);

    unary(&channel, GET_WORKSPACE, get_workspace(WS_A), None)
        .await
        .expect("workspace a");
    unary(&channel, GET_WORKSPACE, get_workspace(WS_B), None)
        .await
        .expect("workspace b");
    unary(&channel, CREATE_WORKSPACE, create_workspace(), None)
        .await
        .expect("a privileged method");
    let calls = server.recorder.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls.iter().all(|(_, caller)| caller == "service:gateway"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("telenet test CA");
    let server = serve(GrpcSecurity::tls(
        server_tls(dir.path(), &ca, ClientCerts::Required),
        identities(),
    ))
    .await;
    let channel = raw_tls_channel(server.addr, without_certificate(&ca));
    let status = unary(&channel, GET_WORKSPACE, get_workspace(WS_A), None)
        .await
        .expect_err("no certificate: no connection");
    // Refused during the handshake, before any call is read.
    assert!(
        format!("{status:?}").contains("CertificateRequired"),
        "{status:?}"
    );
    // Plaintext is no way around it.
    let plain =
        crate::grpc::channel(&server.addr.to_string(), &ClientConfig::default()).expect("channel");
    unary(&plain, GET_WORKSPACE, get_workspace(WS_A), None)
        .await
        .expect_err("plaintext to a TLS port");
    assert!(server.recorder.calls().is_empty());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("telenet test CA");
    let other = Ca::new("someone else's CA");
    for client_certs in [ClientCerts::Required, ClientCerts::Optional] {
        let server = serve(GrpcSecurity::tls(
            server_tls(dir.path(), &ca, client_certs),
            identities(),
        ))
        .await;
        // It names a service and trusts the right CA for the server, but
        // was not issued by it.
        let impostor = load(
            &tls_files(
                &dir.path().join("x"),
                &other,
                &["gateway.telenet.internal"],
                &ca,
            ),
            ClientCerts::Required,
        );
        let status = unary(
            &client(server.addr, &impostor),
            CREATE_WORKSPACE,
            create_workspace(),
            None,
        )
        .await
        .expect_err("refused");
        // During the handshake, in both modes: a certificate that is
        // presented must chain to the CA.
        assert!(format!("{status:?}").contains("fatal alert"), "{status:?}");
        assert!(server.recorder.calls().is_empty(), "{client_certs:?}");
    }
}

#[tokio::test]
async fn a_certificate_naming_no_service_is_not_a_service() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("telenet test CA");
    let server = serve(GrpcSecurity::tls(
        server_tls(dir.path(), &ca, ClientCerts::Required),
        identities(),
    ))
    .await;
    for names in [
        &["billing.example.com"][..],
        &["billing.telenet.internal"][..],
    ] {
        let nobody = load(
            &tls_files(&dir.path().join("nobody"), &ca, names, &ca),
            ClientCerts::Required,
        );
        let status = unary(
            &client(server.addr, &nobody),
            GET_WORKSPACE,
            get_workspace(WS_A),
            None,
        )
        .await
        .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{names:?}: {status:?}"
        );
    }
    assert!(server.recorder.calls().is_empty());
}

#[tokio::test]
async fn replaced_certificates_apply_to_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let server_config = tls_files(
        &dir.path().join("server"),
        &old_ca,
        &["127.0.0.1", "contacts.telenet.internal"],
        &old_ca,
    );
    let server_tls = load(&server_config, ClientCerts::Required);
    let server = serve(GrpcSecurity::tls(server_tls.clone(), identities())).await;
    let watching = tokio::spawn(server_tls.clone().watch(server.stop.clone()));

    let client_config = tls_files(
        &dir.path().join("client"),
        &old_ca,
        &["gateway.telenet.internal"],
        &old_ca,
    );
    let gateway = load(&client_config, ClientCerts::Required);
    let before = client(server.addr, &gateway);
    unary(&before, GET_WORKSPACE, get_workspace(WS_A), None)
        .await
        .expect("old certificates work");

    // cert-manager renews both sides in place, under a new CA.
    tls_files(
        &dir.path().join("server"),
        &new_ca,
        &["127.0.0.1", "contacts.telenet.internal"],
        &new_ca,
    );
    tls_files(
        &dir.path().join("client"),
        &new_ca,
        &["gateway.telenet.internal"],
        &new_ca,
    );
    assert!(
        gateway.reload().expect("client reloads"),
        "client files changed"
    );
    eventually("the server takes the new certificates", async || {
        unary(
            &client(server.addr, &gateway),
            GET_WORKSPACE,
            get_workspace(WS_A),
            None,
        )
        .await
        .is_ok()
    })
    .await;

    // A client still holding the old CA's certificate gets no new connection.
    let stale = load(
        &tls_files(
            &dir.path().join("stale"),
            &old_ca,
            &["gateway.telenet.internal"],
            &new_ca,
        ),
        ClientCerts::Required,
    );
    unary(
        &client(server.addr, &stale),
        GET_WORKSPACE,
        get_workspace(WS_A),
        None,
    )
    .await
    .expect_err("old CA's certificate");
    assert!(!watching.is_finished(), "the server was not restarted");
}

#[tokio::test]
async fn files_that_do_not_load_keep_the_previous_certificates() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("telenet test CA");
    let config = tls_files(&dir.path().join("s"), &ca, &["127.0.0.1"], &ca);
    let tls = load(&config, ClientCerts::Required);
    let before = tls.server_config();
    // A renewal caught between the certificate and its key.
    let (cert, _key) = ca.issue(&["127.0.0.1"]);
    std::fs::write(&config.cert_file, cert).expect("write");
    let error = tls.reload().expect_err("key does not match");
    assert!(error.to_string().contains("grpc_tls.key_file"), "{error}");
    assert!(Arc::ptr_eq(&before, &tls.server_config()), "previous kept");
    // Garbage and missing files are named too.
    std::fs::write(&config.ca_file, "not a certificate").expect("write");
    assert!(Tls::from_config(&config, ClientCerts::Required).is_err());
    let incomplete = GrpcTlsConfig {
        key_file: Default::default(),
        ..config.clone()
    };
    let error = Tls::from_config(&incomplete, ClientCerts::Required).expect_err("incomplete");
    assert!(error.to_string().contains("grpc_tls.key_file"), "{error}");
}

#[tokio::test]
async fn health_answers_without_a_certificate_on_its_own_listener() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("telenet test CA");
    let server = serve(GrpcSecurity::tls(
        server_tls(dir.path(), &ca, ClientCerts::Required),
        identities(),
    ))
    .await;
    let probe = crate::grpc::channel(&server.health_addr.to_string(), &ClientConfig::default())
        .expect("channel");
    let answer = HealthClient::new(probe.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health over plaintext");
    assert_eq!(
        answer.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // Nothing else is served there.
    let status = unary(&probe, GET_WORKSPACE, get_workspace(WS_A), None)
        .await
        .expect_err("only health");
    assert_eq!(status.code(), Code::Unimplemented);
}

// ---------------------------------------------------------------------------
// Platform clients

async fn platform_server(dir: &Path, workspaces: &[&str]) -> (Running, Channel, PlatformClients) {
    let ca = Ca::new("telenet test CA");
    let clients = platform_clients(&clients_file(dir, workspaces));
    let security = GrpcSecurity::tls(server_tls(dir, &ca, ClientCerts::Optional), identities())
        .with_platform_clients(Some(clients.clone()));
    let server = serve(security).await;
    // Platform clients verify the server but present no certificate.
    let channel = raw_tls_channel(server.addr, without_certificate(&ca));
    (server, channel, clients)
}

#[tokio::test]
async fn a_platform_client_acts_only_for_its_workspaces() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, channel, _) = platform_server(dir.path(), &[WS_A]).await;

    unary(&channel, GET_WORKSPACE, get_workspace(WS_A), Some(SECRET))
        .await
        .expect("its own workspace");
    let status = unary(&channel, GET_WORKSPACE, get_workspace(WS_B), Some(SECRET))
        .await
        .expect_err("another workspace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = unary(&channel, GET_WORKSPACE, get_workspace(""), Some(SECRET))
        .await
        .expect_err("no workspace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    assert_eq!(
        server.recorder.calls(),
        [(GET_WORKSPACE.to_owned(), "platform:billing".to_owned())]
    );
}

#[tokio::test]
async fn privileged_methods_are_refused_to_platform_clients() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, channel, _) = platform_server(dir.path(), &[WS_A]).await;

    let status = unary(&channel, CREATE_WORKSPACE, create_workspace(), Some(SECRET))
        .await
        .expect_err("create workspace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Even for its own workspace: the answer carries the channel's secret.
    let status = unary(
        &channel,
        CREDENTIALS,
        GetChannelRequest {
            workspace_id: WS_A.into(),
            channel_id: "c".into(),
        },
        Some(SECRET),
    )
    .await
    .expect_err("channel secret");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A catalog that names no workspace is open.
    unary(&channel, KINDS, ListChannelKindsRequest {}, Some(SECRET))
        .await
        .expect("catalog");
    assert_eq!(
        server.recorder.calls(),
        [(KINDS.to_owned(), "platform:billing".to_owned())]
    );
}

#[tokio::test]
async fn unauthenticated_calls_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, channel, _) = platform_server(dir.path(), &[WS_A]).await;
    for token in [None, Some("a guess")] {
        for (path, result) in [
            (
                GET_WORKSPACE,
                unary(&channel, GET_WORKSPACE, get_workspace(WS_A), token).await,
            ),
            (
                KINDS,
                unary(&channel, KINDS, ListChannelKindsRequest {}, token).await,
            ),
        ] {
            let status = result.expect_err("refused");
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{path} {token:?}: {status:?}"
            );
        }
    }
    assert!(server.recorder.calls().is_empty());
    // Health needs no credential.
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
}

#[tokio::test]
async fn every_message_of_a_stream_is_held_to_the_workspaces() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, channel, _) = platform_server(dir.path(), &[WS_A]).await;
    let header = |workspace: &str| UploadRequest {
        part: Some(upload_request::Part::Header(UploadHeader {
            workspace_id: workspace.into(),
            mime_type: "audio/ogg".into(),
            size_bytes: 0,
        })),
    };
    let chunk = || UploadRequest {
        part: Some(upload_request::Part::Chunk(vec![7; 1000])),
    };

    upload(&channel, vec![header(WS_A), chunk(), chunk()], Some(SECRET))
        .await
        .expect("its own workspace");
    let status = upload(&channel, vec![header(WS_B), chunk()], Some(SECRET))
        .await
        .expect_err("another workspace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = upload(
        &channel,
        vec![header(WS_A), chunk(), header(WS_B)],
        Some(SECRET),
    )
    .await
    .expect_err("another workspace later in the stream");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = upload(&channel, vec![chunk()], Some(SECRET))
        .await
        .expect_err("no header");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(server.recorder.calls().len(), 1);
}

/// Field 1 sent twice: protobuf would take the second.
#[derive(Clone, PartialEq, prost::Message)]
struct TwoWorkspaces {
    #[prost(string, repeated, tag = "1")]
    workspace_ids: Vec<String>,
}

#[tokio::test]
async fn a_workspace_named_twice_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, channel, _) = platform_server(dir.path(), &[WS_A]).await;
    let status = unary(
        &channel,
        GET_WORKSPACE,
        TwoWorkspaces {
            workspace_ids: vec![WS_A.into(), WS_B.into()],
        },
        Some(SECRET),
    )
    .await
    .expect_err("ambiguous");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(server.recorder.calls().is_empty());
}

#[tokio::test]
async fn a_changed_clients_file_applies_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, channel, clients) = platform_server(dir.path(), &[WS_A]).await;
    let watching = tokio::spawn(clients.watch(server.stop.clone()));
    let status = unary(&channel, GET_WORKSPACE, get_workspace(WS_B), Some(SECRET))
        .await
        .expect_err("not yet");
    assert_eq!(status.code(), Code::PermissionDenied);
    // The file the server reads, rewritten with workspace B added.
    clients_file(dir.path(), &[WS_A, WS_B]);
    eventually("workspace b is allowed", async || {
        unary(&channel, GET_WORKSPACE, get_workspace(WS_B), Some(SECRET))
            .await
            .is_ok()
    })
    .await;
    assert!(!watching.is_finished(), "the server was not restarted");
}

#[tokio::test]
async fn plaintext_trusts_callers_but_holds_platform_clients_to_their_workspaces() {
    let dir = tempfile::tempdir().expect("dir");
    let auth = clients_file(dir.path(), &[WS_A]);
    let server =
        serve(GrpcSecurity::plaintext().with_platform_clients(Some(platform_clients(&auth)))).await;
    let channel =
        crate::grpc::channel(&server.addr.to_string(), &ClientConfig::default()).expect("channel");
    unary(&channel, CREATE_WORKSPACE, create_workspace(), None)
        .await
        .expect("the dev server's callers are trusted");
    let status = unary(&channel, GET_WORKSPACE, get_workspace(WS_B), Some(SECRET))
        .await
        .expect_err("platform client");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = unary(&channel, GET_WORKSPACE, get_workspace(WS_A), Some("wrong"))
        .await
        .expect_err("a wrong credential is not ignored");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        server.recorder.calls(),
        [(CREATE_WORKSPACE.to_owned(), "plaintext".to_owned())]
    );
}

// ---------------------------------------------------------------------------
// The v1 API

#[test]
fn every_v1_method_says_where_its_workspace_is_or_is_classified() {
    use telenet_proto::access::{INTERNAL_ONLY, OPEN_TO_PLATFORM_CLIENTS};
    let fields = crate::grpc_auth::workspace_fields(&[telenet_proto::FILE_DESCRIPTOR_SET]);
    assert!(fields.len() > 100, "{} methods", fields.len());
    let listed = |m: &str| INTERNAL_ONLY.contains(&m) || OPEN_TO_PLATFORM_CLIENTS.contains(&m);
    let unclassified: Vec<_> = fields
        .iter()
        .filter(|(method, path)| path.is_none() && !listed(method))
        .map(|(method, _)| method.as_str())
        .collect();
    assert!(
        unclassified.is_empty(),
        "requests without workspace_id in field 1; list them in telenet_proto::access: {unclassified:?}"
    );
    for method in INTERNAL_ONLY.iter().chain(OPEN_TO_PLATFORM_CLIENTS) {
        assert!(fields.contains_key(*method), "{method} does not exist");
    }
    assert_eq!(
        fields["/telenet.media.v1.Media/Upload"],
        Some(vec![1, 1]),
        "an upload's workspace is in its header"
    );
    assert_eq!(fields[GET_WORKSPACE], Some(vec![1]));
    assert_eq!(fields[CREATE_WORKSPACE], None);
}
