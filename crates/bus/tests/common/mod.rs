//! What the RabbitMQ tests share: where the broker is, and a namespace per bus.

use std::sync::Arc;

use telenet_bus::RetryPolicy;
use telenet_bus::rabbitmq::RabbitBus;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker under test: `TELENET_TEST_AMQP_URL`, else the local default.
pub fn amqp_url() -> String {
    std::env::var("TELENET_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// A prefix no other bus, test or test run uses.
pub fn unique_prefix() -> String {
    format!("test-{}.", uuid::Uuid::new_v4().simple())
}

/// Connects a bus with its own prefix. An unreachable broker fails the test
/// with instructions: the RabbitMQ tests are never skipped silently.
pub async fn rabbit(retry: RetryPolicy) -> Arc<RabbitBus> {
    let url = amqp_url();
    match RabbitBus::connect(&url, &unique_prefix(), retry).await {
        Ok(bus) => Arc::new(bus),
        Err(err) => panic!(
            "RabbitMQ is required by this test and is not usable at {} ({err}). \
             Start a broker there (e.g. `docker run -p 5672:5672 rabbitmq:3`) \
             or point TELENET_TEST_AMQP_URL at one.",
            without_credentials(&url)
        ),
    }
}

/// Deletes what each bus declared, so test runs do not fill the broker up.
pub async fn clean_up(buses: &[Arc<RabbitBus>]) {
    for bus in buses {
        if let Err(err) = bus.close_and_delete_declared().await {
            eprintln!("cleaning up {bus:?}: {err}");
        }
    }
}

/// The URL with any user and password removed, for failure messages in CI logs.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}
