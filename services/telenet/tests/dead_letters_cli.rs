//! `telenet dead-letters …` as an operator runs it against RabbitMQ: the
//! topology declared, events of two workspaces dead-lettered by a consumer
//! group; `list` shows them (one JSON object a line) and takes nothing;
//! `redrive` and `discard` refuse to act on nothing named; `redrive
//! --workspace … --all` sends back one workspace's only, as first
//! deliveries; `discard --id` deletes one; an unknown group is named.

use std::process::{Command, Output};
use std::time::Duration;

use telenet_bus::rabbitmq::RabbitBus;
use telenet_bus::{Event, RetryPolicy, SharedBus, Subscription};
use telenet_proto::events::v1::InboundMessageReceived;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_store::events;

const GROUP: &str = "conversations.inbound";

fn amqp_url() -> String {
    std::env::var("TELENET_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `telenet dead-letters <args>` on `prefix`.
fn cli(prefix: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    Command::new(env!("CARGO_BIN_EXE_telenet"))
        .arg("dead-letters")
        .args(args)
        .current_dir(dir.path())
        .env("TELENET_BUS_URL", amqp_url())
        .env("TELENET_BUS_PREFIX", prefix)
        .env("TELENET_DATA_DIR", dir.path())
        .env("TELENET_LOG", "warn")
        .output()
        .expect("telenet runs")
}

/// The JSON lines of a successful run.
fn lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ids(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

fn inbound_of(workspace: &str) -> Event {
    events::to_bus(&events::envelope(
        workspace,
        Payload::InboundMessageReceived(InboundMessageReceived::default()),
        None,
    ))
}

async fn next(sub: &mut Subscription) -> telenet_bus::Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery in time")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_redrive_and_discard_dead_letters() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix = format!("cli-{}-{nanos}.", std::process::id());
    let rabbit = std::sync::Arc::new(
        RabbitBus::connect(&amqp_url(), &prefix, RetryPolicy::default())
            .await
            .expect("RabbitMQ at TELENET_TEST_AMQP_URL or 127.0.0.1:5672"),
    );
    let bus: SharedBus = rabbit.clone();
    telenet::suite::declare_topology(&bus)
        .await
        .expect("declare");
    let spec = telenet::suite::topology()
        .into_iter()
        .find(|s| s.group == GROUP)
        .expect("the group");
    let mut sub = bus.subscribe(spec).await.expect("subscribe");
    let (a1, b1, a2) = (inbound_of("ws-a"), inbound_of("ws-b"), inbound_of("ws-a"));
    bus.publish(&[a1.clone(), b1.clone(), a2.clone()])
        .await
        .expect("publish");
    for _ in 0..3 {
        next(&mut sub)
            .await
            .dead_letter("no such channel")
            .await
            .expect("dead-letter");
    }

    let listed = lines(&cli(&prefix, &["list", "--group", GROUP]));
    assert_eq!(ids(&listed), [a1.id.as_str(), &b1.id, &a2.id]);
    assert_eq!(listed[0]["workspace_id"], "ws-a");
    assert_eq!(listed[0]["routing_key"], "inbound.message");
    assert_eq!(listed[0]["reason"], "no such channel");
    assert_eq!(listed[0]["attempts"], 1);
    let only_b = lines(&cli(&prefix, &["list", "--workspace", "ws-b"]));
    assert_eq!(ids(&only_b), [b1.id.as_str()], "every group, one workspace");

    let refused = cli(&prefix, &["redrive", "--group", GROUP]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--id"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let unknown = cli(&prefix, &["list", "--group", "no-such-group"]);
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("no-such-group") && said.contains(GROUP),
        "{said}"
    );
    assert_eq!(
        ids(&lines(&cli(&prefix, &["list", "--group", GROUP]))).len(),
        3,
        "refusals changed nothing"
    );

    let redriven = lines(&cli(
        &prefix,
        &["redrive", "--group", GROUP, "--workspace", "ws-a", "--all"],
    ));
    assert_eq!(ids(&redriven), [a1.id.as_str(), &a2.id]);
    for expected in [&a1, &a2] {
        let d = next(&mut sub).await;
        assert_eq!(&d.event, expected);
        assert_eq!(d.attempt, 1, "a redrive is a first delivery");
        d.ack().await.expect("ack");
    }

    let discarded = lines(&cli(
        &prefix,
        &["discard", "--group", GROUP, "--id", &b1.id],
    ));
    assert_eq!(ids(&discarded), [b1.id.as_str()]);
    assert!(lines(&cli(&prefix, &["list"])).is_empty());
    drop(sub);
    if let Err(e) = rabbit.close_and_delete_declared().await {
        eprintln!("cleaning up {prefix}: {e}");
    }
}
