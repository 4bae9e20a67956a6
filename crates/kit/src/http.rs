//! Serving an axum router on a listener, as every HTTP listener of the
//! suite does (the gateway, the webhooks, `/metrics`): HTTP/1.1 with read
//! timeouts against clients that open connections and then send slowly or
//! not at all (slow-loris), and a graceful stop.
//!
//! - `http.header_read_timeout` (default 10 s): the request line and
//!   headers must arrive within it, counted from the connection's opening
//!   or the end of the previous response, so an idle keep-alive connection
//!   is closed after it too. A connection past it is closed.
//! - `http.body_read_timeout` (default 60 s): the longest pause while a
//!   request body is read (as nginx's `client_body_timeout`: between two
//!   reads, not for the whole body, so a large upload on a slow line is
//!   not cut). The handler reading the body gets an error (a 400 answer)
//!   and the connection is closed.

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Read timeouts of every HTTP listener (`http.*`; env `TELENET_HTTP__…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpServerConfig {
    /// How long a client has to send a request's line and headers, from
    /// the connection's opening or the end of the previous response (an
    /// idle keep-alive connection is closed after it too); `0s`: no limit.
    #[serde(with = "crate::config::duration")]
    pub header_read_timeout: Duration,
    /// The longest pause while a request body is read (between two reads,
    /// not for the whole body); past it the request fails and the
    /// connection is closed. `0s`: no limit.
    #[serde(with = "crate::config::duration")]
    pub body_read_timeout: Duration,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and waits for the requests in flight (idle connections are
/// closed). Returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    config: HttpServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::error!(%error, "accepting an HTTP connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = tower::ServiceBuilder::new()
            .option_layer(
                (!config.body_read_timeout.is_zero())
                    .then(|| RequestBodyTimeoutLayer::new(config.body_read_timeout)),
            )
            .service(router.clone());
        let header_read_timeout =
            (!config.header_read_timeout.is_zero()).then_some(config.header_read_timeout);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection that does not concern the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Far longer than the timeouts under test: only a server that never
    /// closes the connection runs into it.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn start(config: HttpServerConfig) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let router = axum::Router::new()
            .route("/", get(|| async { "hello" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body }));
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, router, config, token.clone()));
        (addr, token)
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Reads until the server closes the connection; what it sent.
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
        match read {
            Ok(Ok(_)) => {}
            // A reset is a close too.
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(Err(error)) => panic!("read: {error}"),
            Err(_) => panic!(
                "the server kept the connection open for {PATIENCE:?}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
        String::from_utf8_lossy(&received).into_owned()
    }

    async fn get_root(addr: SocketAddr) -> String {
        let mut stream = connect(addr).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        read_until_closed(&mut stream).await
    }

    fn short(header: u64, body: u64) -> HttpServerConfig {
        HttpServerConfig {
            header_read_timeout: Duration::from_millis(header),
            body_read_timeout: Duration::from_millis(body),
        }
    }

    #[tokio::test]
    async fn a_client_stalling_in_its_request_line_is_disconnected_while_others_are_served() {
        let (addr, _token) = start(short(300, 60_000)).await;
        let mut stalled = connect(addr).await;
        stalled
            .write_all(b"GET /slo")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        // Served meanwhile.
        let answer = get_root(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
        // The stalled one is closed without an answer to its request.
        let received = read_until_closed(&mut stalled).await;
        assert!(!received.contains("hello"), "{received}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_header_timeout() {
        let (addr, _token) = start(short(300, 60_000)).await;
        let mut idle = connect(addr).await;
        assert_eq!(read_until_closed(&mut idle).await, "");
    }

    #[tokio::test]
    async fn a_client_stalling_in_its_body_is_disconnected_while_others_are_served() {
        let (addr, _token) = start(short(60_000, 300)).await;
        let mut stalled = connect(addr).await;
        stalled
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let answer = get_root(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let received = read_until_closed(&mut stalled).await;
        assert!(
            received.is_empty() || received.starts_with("HTTP/1.1 400"),
            "{received}"
        );
    }

    #[tokio::test]
    async fn a_body_sent_in_pieces_within_the_timeout_is_read_whole() {
        let (addr, _token) = start(short(60_000, 2_000)).await;
        let mut stream = connect(addr).await;
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 6\r\n\r\nabc")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
            .write_all(b"def")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("abcdef"), "{answer}");
    }

    #[tokio::test]
    async fn without_timeouts_a_stalled_client_keeps_its_connection() {
        let (addr, _token) = start(short(0, 0)).await;
        let mut stalled = connect(addr).await;
        stalled
            .write_all(b"GET /slo")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut buffer = [0_u8; 16];
        let read =
            tokio::time::timeout(Duration::from_millis(800), stalled.read(&mut buffer)).await;
        assert!(
            read.is_err(),
            "closed without a timeout configured: {read:?}"
        );
        // And it can still finish its request.
        stalled
            .write_all(b"w HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let answer = read_until_closed(&mut stalled).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let token = CancellationToken::new();
        let serving = tokio::spawn(serve(
            listener,
            axum::Router::new().route("/", get(|| async { "hello" })),
            HttpServerConfig::default(),
            token.clone(),
        ));
        assert!(get_root(addr).await.ends_with("hello"));
        token.cancel();
        tokio::time::timeout(PATIENCE, serving)
            .await
            .unwrap_or_else(|_| panic!("serve did not return"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
