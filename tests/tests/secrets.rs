//! A channel's secret is shown once, in the answer that creates the channel,
//! and nowhere else: not in the suite's logs (every event of every crate,
//! at every level, with their spans' fields), not in the REST and gRPC
//! answers that list or show channels, not in webhook answers, and not in
//! any database or file the suite keeps. Meanwhile it works: the webhook
//! signed with it is accepted and the reply the channel receives is signed
//! with it.
//!
//! This binary installs its own global subscriber capturing everything, so
//! it is a test file of its own.

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use telenet::ServiceName;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{GetChannelRequest, ListChannelsRequest};
use telenet_store::sqlx::{self, Row};
use telenet_store::testing::Backend;
use telenet_tests::flow::{Gateway, webhook_then_reply};
use telenet_tests::{Receiver, inbound_text, send_webhook, world};

telenet_store::on_both_backends!(a_channel_secret_is_shown_once_and_kept_nowhere_in_clear);

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Installs, once per process, a subscriber writing every event of every
/// crate at every level (with its spans' fields) into memory.
fn captured() -> Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            panic!("another subscriber was installed");
        }
        log
    })
    .clone()
}

/// The parts of `secret` that must never show: the whole `whsec_…` and its
/// base64 key alone.
fn needles(secret: &str) -> [String; 2] {
    [
        secret.to_owned(),
        secret.trim_start_matches("whsec_").to_owned(),
    ]
}

fn assert_absent(what: &str, haystack: &str, secret: &str) {
    for needle in needles(secret) {
        assert!(
            !haystack.contains(&needle),
            "the channel secret is in {what}"
        );
    }
}

async fn a_channel_secret_is_shown_once_and_kept_nowhere_in_clear(backend: Backend) {
    let log = captured();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = match backend {
        Backend::Sqlite => world::embedded(dir.path()),
        Backend::Postgres => world::real(dir.path()).await,
    };
    let (running, token) = world::start(config.clone(), &ServiceName::ALL).await;

    // A channel created over REST (the one answer with its secret), a
    // webhook signed with it, a reply the channel receives signed with it.
    let receiver = Receiver::start().await;
    let trip = webhook_then_reply(&running, &receiver, &[], &[]).await;
    let secret = trip.secret.clone();
    assert!(secret.starts_with("whsec_"));
    writeln!(log.clone(), "--- created channel {}", trip.channel_id).expect("log");

    // REST answers about the channel.
    let gateway = Gateway::of(&running);
    for path in ["/v1/channels", "/v1/conversations", "/v1/me"] {
        let (status, body) = gateway.call(reqwest::Method::GET, path, None, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_absent(&format!("GET {path}"), &body.to_string(), &secret);
    }
    let (_, page) = gateway
        .call(reqwest::Method::GET, "/v1/channels", None, &[])
        .await;
    assert_eq!(page["items"][0]["id"], trip.channel_id.as_str());

    // gRPC answers that show the channel (GetChannelCredentials is the
    // internal one that must carry it).
    let grpc = telenet_kit::grpc::channel(
        &format!("http://{}", running.grpc_addr),
        &Default::default(),
    )
    .expect("channel");
    let workspace = running.seed.as_ref().expect("seeded").workspace_id.clone();
    let mut channels = ChannelsClient::new(grpc);
    let request = GetChannelRequest {
        workspace_id: workspace.clone(),
        channel_id: trip.channel_id.clone(),
    };
    let got = channels
        .get_channel(request.clone())
        .await
        .expect("get")
        .into_inner();
    assert_absent("GetChannel", &format!("{got:?}"), &secret);
    let listed = channels
        .list_channels(ListChannelsRequest {
            workspace_id: workspace.clone(),
            page: None,
        })
        .await
        .expect("list")
        .into_inner();
    assert_absent("ListChannels", &format!("{listed:?}"), &secret);
    let internal = channels
        .get_channel_credentials(request)
        .await
        .expect("credentials")
        .into_inner();
    assert_eq!(internal.secret, secret);
    assert_absent("the credentials' Debug", &format!("{internal:?}"), &secret);

    // Webhook answers: accepted, refused for a bad signature, a duplicate.
    let http = reqwest::Client::new();
    let url = got.webhook_url.clone();
    let other = telenet_signing::Secret::generate().expect("rng").expose();
    for (secret_used, id) in [(&secret, "wh-2"), (&other, "wh-3"), (&secret, "wh-2")] {
        let answer = send_webhook(
            &http,
            &url,
            secret_used,
            id,
            &inbound_text(&format!("in-{id}"), "+34600111222", "¿Sigue ahí?"),
        )
        .await;
        let text = answer.text().await.expect("body");
        assert_absent("a webhook answer", &text, &secret);
    }

    token.cancel();
    running.wait().await;

    // Nothing logged carries it, though much was logged about the channel.
    let text = log.text();
    assert!(
        text.contains(&trip.channel_id),
        "the channel was logged about"
    );
    assert!(text.contains("TRACE"), "every level was captured");
    assert_absent("the logs", &text, &secret);

    // At rest: sealed in ingress's table, in clear nowhere in any database
    // of the suite nor in any file it keeps.
    let db = telenet_store::Db::connect(&config.database_url_of(ServiceName::Ingress), "ingress")
        .await
        .expect("ingress database");
    let row = sqlx::query("SELECT secret, secret_key FROM channels WHERE id = $1")
        .bind(&trip.channel_id)
        .fetch_one(db.pool())
        .await
        .expect("the channel's row");
    let stored: String = row.try_get("secret").expect("secret");
    let key: Option<String> = row.try_get("secret_key").expect("key");
    assert_eq!(key.as_deref(), Some("local"));
    assert!(stored.starts_with("sealed:v1:local:"), "{stored}");
    if backend == Backend::Postgres {
        let tables = sqlx::query(
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'",
        )
        .fetch_all(db.pool())
        .await
        .expect("tables");
        assert!(tables.len() > 5, "every service's tables");
        for table in tables {
            let table: String = table.try_get("t").expect("name");
            let rows = sqlx::query(&format!("SELECT CAST(t AS TEXT) AS r FROM {table} t"))
                .fetch_all(db.pool())
                .await
                .expect("rows");
            for row in rows {
                let row: String = row.try_get("r").expect("row text");
                assert_absent(&format!("table {table}"), &row, &secret);
            }
        }
    }
    db.close().await;
    let mut files = 0;
    let mut pending = vec![dir.path().to_owned()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).expect("file");
                let text = String::from_utf8_lossy(&bytes);
                assert_absent(&format!("{}", path.display()), &text, &secret);
            }
        }
    }
    assert!(files > 0);
    drop(dir);
}
