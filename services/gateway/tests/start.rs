//! `start`: the gateway started the way the process starts it (its presence
//! store, the endpoints of the other services and a listener bound
//! beforehand), then run by the process's runner: its REST API answers on
//! that listener and its presence-count poller fills the process's metrics.

use std::sync::Arc;
use std::time::Duration;

use telenet_gateway::{CALLS, Config, NAME};
use telenet_kit::grpc::GrpcServer;
use telenet_kit::metrics::Metrics;
use telenet_presence::{MemoryPresence, Thresholds};
use telenet_runtime::{Phase, Runner, ServiceContext};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the process gives the gateway; the other services are at a port
/// nothing listens on.
async fn context() -> ServiceContext<Config> {
    let bus = telenet_bus::connect("memory://", "test.", Default::default())
        .await
        .expect("bus");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    ServiceContext::new(NAME, Config::default(), bus, Metrics::new())
        .with_calls(CALLS)
        .with_listener(listener)
        .with_presence(Arc::new(MemoryPresence::new(Thresholds::default())))
        .with_endpoints(
            Arc::new(|_| Some("http://127.0.0.1:9".to_owned())),
            Default::default(),
        )
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn started_gateway_serves_on_the_listener_and_counts_presence() {
    let ctx = context().await;
    let addr = ctx.listener_addr().expect("listener address");
    let metrics = ctx.metrics.clone();
    let bus = ctx.bus.clone();
    let started = telenet_gateway::start(ctx).await.expect("starts");
    assert_eq!(started.http.len(), 1);
    let tasks: Vec<(&str, Phase)> = started
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.phase))
        .collect();
    assert_eq!(
        tasks,
        vec![
            ("gateway.token-revocations", Phase::Consume),
            ("gateway.presence-counts", Phase::Work),
        ]
    );

    let token = CancellationToken::new();
    let server = GrpcServer::new(Default::default())
        .file_descriptor_sets(&[])
        .with_metrics(metrics.clone());
    let mut runner = Runner::new(server, metrics.clone(), bus, token.clone());
    runner.add(NAME, None, started);
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running = tokio::spawn(runner.run(grpc));

    let answer = http_get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics.encode().expect("encodes");
        if text.contains(r#"telenet_presence_users{status="online"} 0"#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no presence count:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    token.cancel();
    running.await.expect("stops");
}

#[tokio::test]
async fn start_needs_the_listener_of_the_process() {
    let mut ctx = context().await;
    ctx.listener = None;
    let error = telenet_gateway::start(ctx)
        .await
        .err()
        .expect("no listener, no gateway");
    assert!(error.to_string().contains("listener"), "{error:#}");
}

#[tokio::test]
async fn start_needs_the_presence_store_of_the_process() {
    let mut ctx = context().await;
    ctx.presence = None;
    let error = telenet_gateway::start(ctx)
        .await
        .err()
        .expect("no presence store, no gateway");
    assert!(error.to_string().contains("presence"), "{error:#}");
}
