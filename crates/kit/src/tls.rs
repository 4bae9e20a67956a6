//! Mutual TLS between TELENET's services (docs/security.md).
//!
//! Each service has a certificate signed by the installation's own CA (a
//! Kubernetes Secret written by Helm or cert-manager) and presents it both
//! as a server and as a client. A caller's certificate names the service it
//! belongs to with the DNS name `<service>.telenet.internal`
//! ([`IDENTITY_DOMAIN`]); a server's certificate also carries the names it
//! is reached at (its Kubernetes Service), which callers verify as usual.
//!
//! The files are read again every [`GrpcTlsConfig::reload_interval`]; when
//! they changed (cert-manager renews certificates in place), connections
//! made from then on, accepted and opened, use the new certificate, key and
//! CA. Connections already open keep the ones they were made with. A set of
//! files that does not load (a renewal caught half-written, a key that does
//! not match its certificate) is logged and the previous one kept.
//!
//! [`Tls`] is the loaded material, shared by the process's gRPC server
//! ([`crate::grpc::GrpcServer::with_security`]) and its clients
//! ([`crate::grpc::client_with`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::client::verify_server_name;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::config::duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The domain under which a certificate names the service it belongs to:
/// `gateway.telenet.internal` is the gateway.
pub const IDENTITY_DOMAIN: &str = "telenet.internal";

/// The longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Mutual TLS settings (`grpc_tls.*`). Empty files: no TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// PEM file with this process's certificate, then any intermediates: its
    /// identity both as a gRPC server and as a client of the other services.
    /// It names the service (`<service>.telenet.internal`) and the host
    /// names callers reach it at. Empty: gRPC without TLS.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates the services' certificates are
    /// signed by; a peer whose certificate does not chain to one of them is
    /// refused during the handshake.
    pub ca_file: PathBuf,
    /// How often the three files are read again; changed files apply to the
    /// connections made from then on, without a restart (0: read once, at
    /// start).
    #[serde(with = "duration")]
    pub reload_interval: Duration,
    /// `telenet serve` only: serve gRPC without TLS on an address other
    /// than loopback, trusting every caller as one of the services. Only
    /// for a network that authenticates callers itself (a service mesh
    /// with mutual TLS); platform clients are still held to their
    /// workspaces.
    pub allow_plaintext: bool,
}

impl Default for GrpcTlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            reload_interval: Duration::from_secs(30),
            allow_plaintext: false,
        }
    }
}

impl GrpcTlsConfig {
    /// Whether any of the files is set (all three must be).
    pub fn is_enabled(&self) -> bool {
        [&self.cert_file, &self.key_file, &self.ca_file]
            .iter()
            .any(|path| !path.as_os_str().is_empty())
    }
}

/// Whether a server asks callers for a certificate or insists on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Refused during the handshake without a certificate from the CA.
    Required,
    /// Callers without a certificate may connect (platform clients, which
    /// authenticate with a credential instead); a certificate that is
    /// presented must still chain to the CA.
    Optional,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Some of the three files are set, not all.
    #[error("grpc_tls: set cert_file, key_file and ca_file together; {0} is empty")]
    Incomplete(&'static str),
    /// A file could not be read.
    #[error("grpc_tls.{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file's content is unusable.
    #[error("grpc_tls.{key}: {}: {reason}", path.display())]
    Invalid {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The files, by configuration key.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn read(&self) -> Result<[Vec<u8>; 3], TlsError> {
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                key,
                path: path.to_owned(),
                source,
            })
        };
        Ok([
            read("cert_file", &self.cert)?,
            read("key_file", &self.key)?,
            read("ca_file", &self.ca)?,
        ])
    }
}

/// What one reading of the files made.
struct Material {
    raw: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

struct Inner {
    files: Files,
    client_certs: ClientCerts,
    reload_interval: Duration,
    current: RwLock<Arc<Material>>,
}

/// The process's certificate, key and CA, read again when they change; see
/// the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.inner.files.cert)
            .field("client_certs", &self.inner.client_certs)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The files of `config`, loaded; `None` when TLS is not configured.
    pub fn from_config(
        config: &GrpcTlsConfig,
        client_certs: ClientCerts,
    ) -> Result<Option<Tls>, TlsError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        for (key, path) in [
            ("grpc_tls.cert_file", &config.cert_file),
            ("grpc_tls.key_file", &config.key_file),
            ("grpc_tls.ca_file", &config.ca_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(TlsError::Incomplete(key));
            }
        }
        let files = Files {
            cert: config.cert_file.clone(),
            key: config.key_file.clone(),
            ca: config.ca_file.clone(),
        };
        let material = build(&files, files.read()?, client_certs)?;
        Ok(Some(Tls {
            inner: Arc::new(Inner {
                files,
                client_certs,
                reload_interval: config.reload_interval,
                current: RwLock::new(Arc::new(material)),
            }),
        }))
    }

    fn current(&self) -> Arc<Material> {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The server side of the current material (for the next accepted
    /// connection).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The client side of the current material (for the next connection
    /// made).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// Reads the files again; when they changed and load, the next
    /// connections use them. `Ok(true)` when they changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let raw = self.inner.files.read()?;
        if raw == self.current().raw {
            return Ok(false);
        }
        let material = build(&self.inner.files, raw, self.inner.client_certs)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(material);
        Ok(true)
    }

    /// Reloads every [`GrpcTlsConfig::reload_interval`] until `token` is
    /// cancelled. A failed reload is logged (once until the failure
    /// changes) and the current material kept.
    pub async fn watch(self, token: CancellationToken) {
        let interval = self.inner.reload_interval;
        crate::reload::every(&self, interval, token).await;
    }
}

impl crate::reload::Reload for Tls {
    type Error = TlsError;

    fn reload(&self) -> Result<bool, TlsError> {
        Tls::reload(self)
    }

    fn changed(&self) {
        tracing::info!(cert_file = %self.inner.files.cert.display(), "grpc certificates reloaded; new connections use them");
    }

    fn failed(&self, error: &TlsError) {
        tracing::warn!(%error, "grpc certificates not reloaded; the previous ones stay in use");
    }
}

fn build(
    files: &Files,
    raw: [Vec<u8>; 3],
    client_certs: ClientCerts,
) -> Result<Material, TlsError> {
    let invalid = |key: &'static str, path: &Path, reason: String| TlsError::Invalid {
        key,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&raw[0])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("cert_file", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            "cert_file",
            &files.cert,
            "no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&raw[1])
        .map_err(|e| invalid("key_file", &files.key, e.to_string()))?;
    let cas = CertificateDer::pem_slice_iter(&raw[2])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("ca_file", &files.ca, e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| invalid("ca_file", &files.ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            "ca_file",
            &files.ca,
            "no PEM certificate in it".into(),
        ));
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let verifier = match client_certs {
        ClientCerts::Required => verifier,
        ClientCerts::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| invalid("ca_file", &files.ca, e.to_string()))?;
    let versions = |e: rustls::Error| invalid("cert_file", &files.cert, e.to_string());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_client_cert_verifier(verifier)
        // Fails when the key is not the certificate's: a renewal caught
        // between writing the two files.
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| invalid("key_file", &files.key, e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| invalid("key_file", &files.key, e.to_string()))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Material {
        raw,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

// ---------------------------------------------------------------------------
// Server side: accepted connections

/// What the server knows of the peer of a TLS connection, in every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The TELENET service its certificate names, if it presented one that
    /// does.
    pub identity: Option<Arc<str>>,
}

/// The service a verified client certificate names: the first of
/// `identities` for which it is valid as `<identity>.telenet.internal`.
fn identity_of(cert: &CertificateDer<'_>, identities: &[String]) -> Option<Arc<str>> {
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    identities
        .iter()
        .find(|identity| {
            ServerName::try_from(format!("{identity}.{IDENTITY_DOMAIN}"))
                .is_ok_and(|name| verify_server_name(&parsed, &name).is_ok())
        })
        .map(|identity| Arc::from(identity.as_str()))
}

/// An accepted connection after its handshake.
pub(crate) struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted TCP connections after their TLS handshakes, which run
/// concurrently (a slow handshake holds up no other) and are bounded in
/// time. Failed handshakes are logged and dropped: a caller without a
/// certificate from the CA gets no further.
pub(crate) struct TlsIncoming {
    tcp: TcpIncoming,
    tls: Tls,
    identities: Arc<[String]>,
    handshakes: JoinSet<Option<TlsConn>>,
    tcp_done: bool,
}

impl TlsIncoming {
    pub(crate) fn new(tcp: TcpIncoming, tls: Tls, identities: Arc<[String]>) -> Self {
        Self {
            tcp,
            tls,
            identities,
            handshakes: JoinSet::new(),
            tcp_done: false,
        }
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.tcp_done {
            match Pin::new(&mut this.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let config = this.tls.server_config();
                    let identities = this.identities.clone();
                    this.handshakes.spawn(handshake(stream, config, identities));
                }
                // tonic logs accept errors and goes on.
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => this.tcp_done = true,
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) if this.tcp_done => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    identities: Arc<[String]>,
) -> Option<TlsConn> {
    let remote_addr = tcp.peer_addr().ok();
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(peer = ?remote_addr, %error, "grpc tls handshake refused");
            return None;
        }
        Err(_elapsed) => {
            tracing::debug!(peer = ?remote_addr, "grpc tls handshake timed out");
            return None;
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| identity_of(cert, &identities));
    Some(TlsConn {
        stream,
        peer: TlsPeer {
            remote_addr,
            identity,
        },
    })
}

// ---------------------------------------------------------------------------
// Client side: connections made

/// Connects over TCP, then TLS with the current client material, verifying
/// the server's certificate for the endpoint's host name.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    tls: Tls,
    tcp: HttpConnector,
}

impl TlsConnector {
    pub(crate) fn new(tls: Tls, connect_timeout: Duration, tcp_keepalive: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        // The scheme says nothing here: every connection is TLS.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(tcp_keepalive));
        tcp.set_connect_timeout(Some(connect_timeout));
        Self { tls, tcp }
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let config = self.tls.client_config();
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let server_name = ServerName::try_from(host)?;
            let tcp = connecting.await?.into_inner();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates made on the spot for tests.

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    /// A CA that signs certificates.
    pub(crate) struct Ca {
        pub(crate) pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        pub(crate) fn new(name: &str) -> Ca {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("ca key");
            let cert = params.self_signed(&key).expect("ca cert");
            Ca {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A certificate for `names` (DNS names or IP addresses), for both
        /// server and client use: (certificate PEM, key PEM).
        pub(crate) fn issue(&self, names: &[&str]) -> (String, String) {
            let mut params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .expect("names");
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.issuer).expect("signed");
            (cert.pem(), key.serialize_pem())
        }

        /// Writes a certificate for `names`, its key and this CA into `dir`
        /// (replacing what is there); returns the three paths.
        pub(crate) fn write(&self, dir: &Path, names: &[&str]) -> [PathBuf; 3] {
            let (cert, key) = self.issue(names);
            let paths = [dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt")];
            for (path, text) in paths.iter().zip([&cert, &key, &self.pem]) {
                std::fs::write(path, text).expect("write");
            }
            paths
        }
    }
}
