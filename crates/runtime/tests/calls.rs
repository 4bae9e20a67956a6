//! A service reaches only the services it declares it calls (its `CALLS`):
//! the context refuses a client of, or the HTTP address of, any other, and a
//! service started in a test is held to the same declaration.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telenet_kit::metrics::Metrics;
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_runtime::{Call, ServiceContext, Started};

const GATEWAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// A context for `name` declaring `calls`, every service's endpoint and
/// HTTP address known; the services whose endpoint was looked up are
/// recorded.
async fn context(
    name: &'static str,
    calls: &'static [Call],
) -> (ServiceContext<()>, Arc<Mutex<Vec<String>>>) {
    let bus = telenet_bus::connect("memory://", "calls.", Default::default())
        .await
        .expect("bus");
    let looked_up = Arc::new(Mutex::new(Vec::new()));
    let seen = looked_up.clone();
    let ctx = ServiceContext::new(name, (), bus, Metrics::new())
        .with_calls(calls)
        .with_endpoints(
            Arc::new(move |service| {
                seen.lock().expect("lock").push(service.to_owned());
                Some("http://127.0.0.1:9".to_owned())
            }),
            Default::default(),
        )
        .with_http_addrs(Arc::new(|_| Some(GATEWAY)));
    (ctx, looked_up)
}

fn refusal<T>(result: anyhow::Result<T>) -> String {
    match result {
        Ok(_) => panic!("the call was allowed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn clients_only_of_the_services_declared_over_grpc() {
    static CALLS: &[Call] = &[Call::grpc("ingress"), Call::link("gateway")];
    let (ctx, looked_up) = context("dispatch", CALLS).await;
    ctx.client("ingress").expect("declared");
    ctx.client_with_timeout("ingress", Duration::from_secs(1))
        .expect("declared");

    let error = refusal(ctx.client("media"));
    assert!(
        error.contains("dispatch may not reach the media service over gRPC"),
        "{error}"
    );
    assert!(error.contains(r#"Call::grpc("media")"#), "{error}");
    let error = refusal(ctx.client_with_timeout("media", Duration::ZERO));
    assert!(error.contains("may not reach the media service"), "{error}");
    // A link to the gateway is no gRPC call of it.
    let error = refusal(ctx.client("gateway"));
    assert!(error.contains("over gRPC"), "{error}");
    // Refused before its endpoint is even looked up.
    assert_eq!(*looked_up.lock().expect("lock"), ["ingress", "ingress"]);
}

#[tokio::test]
async fn without_a_declaration_a_service_calls_nothing() {
    let bus = telenet_bus::connect("memory://", "calls.", Default::default())
        .await
        .expect("bus");
    let ctx = ServiceContext::new("conversations", (), bus, Metrics::new()).with_endpoints(
        Arc::new(|_| Some("http://127.0.0.1:9".to_owned())),
        Default::default(),
    );
    assert!(ctx.calls().is_empty());
    let error = refusal(ctx.client("contacts"));
    assert!(error.contains("declared: none"), "{error}");
}

#[tokio::test]
async fn http_addresses_only_of_the_services_declared_over_http_or_linked_to() {
    static CALLS: &[Call] = &[
        Call::grpc("ingress"),
        Call::link("gateway"),
        Call::http("webhooks"),
    ];
    let (ctx, _) = context("media", CALLS).await;
    assert_eq!(ctx.http_addr_of("gateway").expect("linked"), Some(GATEWAY));
    assert_eq!(ctx.http_addr_of("webhooks").expect("called"), Some(GATEWAY));
    let error = refusal(ctx.http_addr_of("ingress"));
    assert!(
        error.contains("media may not reach the ingress service over HTTP"),
        "{error}"
    );
    let error = refusal(ctx.http_addr_of("reporting"));
    assert!(error.contains(r#"Call::http("reporting")"#), "{error}");
}

#[tokio::test]
async fn a_declared_service_without_an_endpoint_is_named() {
    static CALLS: &[Call] = &[Call::grpc("contacts")];
    let bus = telenet_bus::connect("memory://", "calls.", Default::default())
        .await
        .expect("bus");
    let ctx = ServiceContext::new("conversations", (), bus, Metrics::new()).with_calls(CALLS);
    let error = refusal(ctx.client("contacts"));
    assert!(
        error.contains("conversations needs the contacts service, whose endpoint is not set"),
        "{error}"
    );
}

#[tokio::test]
async fn the_declaration_stays_with_the_context_when_its_settings_change() {
    static CALLS: &[Call] = &[Call::grpc("contacts")];
    let (ctx, _) = context("conversations", CALLS).await;
    let ctx = ctx.map_config(|()| 7_u32);
    assert_eq!(ctx.calls(), CALLS);
    ctx.client("contacts").expect("still declared");
    assert!(ctx.client("media").is_err());
}

#[tokio::test]
async fn a_service_under_test_is_held_to_its_declaration() {
    async fn calls_ingress(ctx: ServiceContext<()>) -> anyhow::Result<Started> {
        ctx.client("ingress")?;
        Ok(Started::new())
    }
    let error =
        refusal(TestService::try_start(TestSetup::new("dispatch", ()), calls_ingress).await);
    assert!(
        error.contains("may not reach the ingress service"),
        "{error}"
    );

    static CALLS: &[Call] = &[Call::grpc("ingress")];
    let service =
        TestService::try_start(TestSetup::new("dispatch", ()).calls(CALLS), calls_ingress)
            .await
            .expect("declared, so it starts");
    service.stop().await;
}
