//! The broker connection's transport: TCP, and TLS for `amqps://` (ADR 17).
//!
//! lapin's own TLS support comes with a PKCS#12 parser and its ASN.1 stack
//! (a second `nom`, DES, RC2…) whatever TLS library is picked. lapin takes
//! its sockets from the reactor of the runtime it is given, so the bus hands
//! it a runtime whose reactor makes the TLS connection itself, with the
//! process's rustls (ring): the broker's certificate is verified against the
//! system's CA store plus the private CA of `bus_tls.ca_file`, and must name
//! the URL's host; `bus_tls.cert_file`/`key_file` are presented when set.

use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_compat::Compat;
use async_rs::traits::Reactor;
use async_rs::util::RuntimeParts;
use async_rs::{Runtime, Tokio};
use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::Stream as FuturesStream;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use telenet_kit::infra_tls::InfraTlsConfig;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::BusError;

/// The runtime lapin is given: tokio's executor, [`TransportReactor`]'s
/// sockets.
pub(crate) type TransportRuntime = Runtime<RuntimeParts<Tokio, TransportReactor>>;

/// TLS settings for one broker: who it must be and whom to trust.
#[derive(Clone)]
pub(crate) struct BrokerTls {
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BrokerTls {
    /// For the broker at `host`: the system's CAs and those of `tls`, and
    /// its client certificate. The files are read now.
    pub(crate) fn new(host: &str, tls: &InfraTlsConfig) -> Result<Self, BusError> {
        let config_err = |reason: String| BusError::Config(reason);
        let loaded = tls.load("bus_tls").map_err(|e| config_err(e.to_string()))?;
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| config_err(format!("amqps:// host `{host}`: {e}")))?;

        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(pem) = loaded.ca_pem() {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| config_err(format!("bus_tls.ca_file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| config_err(format!("bus_tls.ca_file: {e}")))?;
            }
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(format!("bus_tls: {e}")))?
            .with_root_certificates(roots);
        let config = match loaded.identity() {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| config_err(format!("bus_tls.cert_file: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
                    .map_err(|e| config_err(format!("bus_tls.key_file: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| config_err(format!("bus_tls.key_file: {e}")))?
            }
        };
        Ok(Self {
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// The runtime for one broker connection: plain TCP, or TLS with `tls`.
pub(crate) fn runtime(tls: Option<BrokerTls>) -> TransportRuntime {
    Runtime::new(RuntimeParts::new(
        Tokio::current(),
        TransportReactor {
            tokio: Tokio::current(),
            tls,
        },
    ))
}

/// Tokio's reactor, except that the TCP connections it makes are wrapped in
/// TLS when the broker is `amqps://`.
#[derive(Clone, Debug)]
pub(crate) struct TransportReactor {
    tokio: Tokio,
    tls: Option<BrokerTls>,
}

impl Reactor for TransportReactor {
    type TcpStream = Transport;
    type Sleep = <Tokio as Reactor>::Sleep;

    // `AsFd + AsRawFd` is what the trait's own (unexported) bound stands for.
    fn register<H: Read + Write + AsFd + AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        self.tokio.register(socket)
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.tokio.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl FuturesStream<Item = Instant> + Send + 'static {
        self.tokio.interval(dur)
    }

    fn tcp_connect_addr(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let tcp = self.tokio.tcp_connect_addr(addr);
        let tls = self.tls.clone();
        async move {
            let tcp = tcp.await?;
            match tls {
                None => Ok(Transport::Plain(tcp)),
                Some(tls) => {
                    let stream = tls
                        .connector
                        .connect(tls.server_name.clone(), tcp.into_inner())
                        .await?;
                    Ok(Transport::Tls(Box::new(Compat::new(stream))))
                }
            }
        }
    }
}

/// A connection to the broker, plain or TLS.
pub(crate) enum Transport {
    Plain(Compat<tokio::net::TcpStream>),
    Tls(Box<Compat<TlsStream<tokio::net::TcpStream>>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
