//! Channel secrets at rest, with ingress started as the process starts it,
//! on both backends: sealed under the keyring's current key and never in
//! the table in clear; re-sealed in the background when another key becomes
//! current, after which the old key can go; unreadable (and untouched)
//! while their key is missing; plain-text rows from before the migration
//! sealed at start; several replicas re-sealing at once; and the dev
//! server's local key made once and kept across restarts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use telenet_ingress::{Config, EncryptionConfig, MIGRATIONS, NAME, Secrets, start};
use telenet_kit::grpc::GrpcChannel;
use telenet_kit::metrics::sample;
use telenet_proto::common::v1::ChannelKind;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{CreateChannelRequest, DeleteChannelRequest, GetChannelRequest};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_signing::Secret;
use telenet_signing::sealing::{Keyring, generate_key};
use telenet_store::sqlx::{self, Row};
use telenet_store::testing::Backend;
use telenet_store::{Db, Migrations};
use tokio_util::sync::CancellationToken;
use tonic::Code;

telenet_store::on_both_backends!(
    rotating_the_key_reseals_every_secret_then_the_old_key_can_go,
    plain_text_secrets_from_before_are_sealed_at_start,
    two_replicas_reseal_at_once_and_every_secret_still_opens,
    the_local_key_is_made_once_and_kept_across_restarts,
);

/// Longest wait for the background re-sealing.
const WAIT: Duration = Duration::from_secs(20);

// ----------------------------------------------------------------- harness

/// One ingress database and data directory, kept across restarts.
struct Place {
    backend: Backend,
    url: String,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Place {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = backend.url(dir.path(), NAME).await;
        Self {
            backend,
            url,
            data_dir: dir.path().join("data"),
            _dir: dir,
        }
    }

    fn setup(&self, encryption: EncryptionConfig) -> TestSetup<Config> {
        let config = Config {
            encryption,
            ..Config::default()
        };
        TestSetup::new(NAME, config)
            .database(self.backend, MIGRATIONS)
            .database_url(&self.url)
            .data_dir(&self.data_dir)
            .listener()
    }

    /// Started on a bus where a consumer group binds the inbound events, as
    /// the process declares it, so accepted webhooks have a queue to go to.
    async fn start(&self, encryption: EncryptionConfig) -> Running {
        let bus = Arc::new(telenet_bus::memory::MemoryBus::new(Default::default()));
        telenet_bus::EventBus::declare(
            bus.as_ref(),
            &[telenet_bus::SubscribeSpec::new("inbox", &["inbound.*"])],
        )
        .await
        .expect("declare");
        let service = TestService::start(self.setup(encryption).bus(bus), start).await;
        Running::of(service)
    }

    async fn db(&self) -> Db {
        Db::connect(&self.url, NAME).await.expect("database")
    }

    /// Every channel row's id, secret and key, as stored.
    async fn rows(&self) -> Vec<(String, String, Option<String>)> {
        let db = self.db().await;
        let rows = sqlx::query("SELECT id, secret, secret_key FROM channels ORDER BY id")
            .fetch_all(db.pool())
            .await
            .expect("rows");
        let rows = rows
            .iter()
            .map(|r| {
                (
                    r.try_get("id").expect("id"),
                    r.try_get("secret").expect("secret"),
                    r.try_get("secret_key").expect("secret_key"),
                )
            })
            .collect();
        db.close().await;
        rows
    }

    /// Every stored secret is sealed under `key`, and none of `secrets`
    /// (nor its key bytes' base64) is anywhere in the table.
    async fn assert_all_sealed_under(&self, key: &str, secrets: &[String]) {
        let rows = self.rows().await;
        assert!(!rows.is_empty());
        for (id, stored, stored_key) in &rows {
            assert_eq!(stored_key.as_deref(), Some(key), "{id}");
            assert!(
                stored.starts_with(&format!("sealed:v1:{key}:")),
                "{id}: {stored}"
            );
        }
        let db = self.db().await;
        let everything: Vec<String> = sqlx::query("SELECT * FROM channels")
            .fetch_all(db.pool())
            .await
            .expect("rows")
            .iter()
            .flat_map(|r| {
                (0..r.len())
                    .filter_map(|i| r.try_get::<String, _>(i).ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        db.close().await;
        for secret in secrets {
            let bare = secret.trim_start_matches("whsec_");
            for value in &everything {
                assert!(!value.contains(bare), "a secret in clear: {value}");
            }
        }
    }
}

fn keyring_config(current: &str, keys: &[(&str, &str)]) -> EncryptionConfig {
    EncryptionConfig {
        keys: keys
            .iter()
            .map(|(id, key)| ((*id).to_owned(), (*key).to_owned()))
            .collect(),
        current_key: current.to_owned(),
        local_key: false,
        reseal_batch: 3,
        reseal_interval: Duration::from_secs(3600),
    }
}

/// A started ingress and its clients.
struct Running {
    service: TestService,
    grpc: GrpcChannel,
    http: reqwest::Client,
}

/// A channel as its creator saw it.
#[derive(Debug, Clone)]
struct Made {
    workspace: String,
    id: String,
    secret: String,
}

impl Running {
    fn of(service: TestService) -> Self {
        let grpc = service.channel();
        Self {
            service,
            grpc,
            http: reqwest::Client::new(),
        }
    }

    fn channels(&self) -> ChannelsClient<GrpcChannel> {
        ChannelsClient::new(self.grpc.clone())
    }

    async fn create(&self, workspace: &str, name: &str) -> Made {
        let created = self
            .channels()
            .create_channel(CreateChannelRequest {
                workspace_id: workspace.into(),
                kind: ChannelKind::Custom as i32,
                name: name.into(),
                outbound_url: "http://shop.example/in".into(),
                secret: String::new(),
                accepted_voice_types: vec![],
            })
            .await
            .expect("create")
            .into_inner();
        let channel = created.channel.expect("channel");
        Made {
            workspace: workspace.into(),
            id: channel.id,
            secret: created.secret,
        }
    }

    async fn credentials(&self, made: &Made) -> Result<String, tonic::Status> {
        self.channels()
            .get_channel_credentials(GetChannelRequest {
                workspace_id: made.workspace.clone(),
                channel_id: made.id.clone(),
            })
            .await
            .map(|r| r.into_inner().secret)
    }

    /// The status of a webhook to `made` signed with its secret, at the
    /// URL this start serves it on (the listener's port changes).
    async fn webhook(&self, made: &Made, id: &str) -> u16 {
        let addr = self.service.http_addr.expect("a webhook listener");
        let url = format!("http://{addr}/webhooks/{}", made.id);
        let body = serde_json::json!({
            "type": "message.inbound",
            "message": {"external_id": id, "sender": {"external_id": "+34600"}, "text": "hola"},
        })
        .to_string();
        let now = telenet_signing::unix_now();
        let signature = Secret::parse(&made.secret)
            .expect("secret")
            .sign(id, now, body.as_bytes());
        self.http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .expect("webhook")
            .status()
            .as_u16()
    }

    fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.service.metrics.encode().expect("metrics"), series)
    }

    /// Wait until `series` reads `want`.
    async fn metric_reaches(&self, series: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.metric(series) == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is {:?}, not {want}",
                self.metric(series)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn stop(self) {
        self.service.stop().await;
    }
}

// ------------------------------------------------------------------- tests

async fn rotating_the_key_reseals_every_secret_then_the_old_key_can_go(backend: Backend) {
    let place = Place::new(backend).await;
    let (key_a, key_b) = (generate_key().expect("rng"), generate_key().expect("rng"));

    // Seven channels in two workspaces under key a; one of them deleted
    // (its secret is still stored, so it is re-sealed too).
    let ingress = place.start(keyring_config("a", &[("a", &key_a)])).await;
    let mut made = Vec::new();
    for (i, ws) in ["ws1", "ws1", "ws1", "ws1", "ws2", "ws2", "ws2"]
        .iter()
        .enumerate()
    {
        made.push(ingress.create(ws, &format!("Shop {i}")).await);
    }
    let deleted = made.pop().expect("seven");
    ingress
        .channels()
        .delete_channel(DeleteChannelRequest {
            workspace_id: deleted.workspace.clone(),
            channel_id: deleted.id.clone(),
        })
        .await
        .expect("delete");
    ingress.stop().await;
    let secrets: Vec<String> = made
        .iter()
        .chain([&deleted])
        .map(|m| m.secret.clone())
        .collect();
    place.assert_all_sealed_under("a", &secrets).await;

    // Key a taken away too early: its secrets cannot be read (UNAVAILABLE,
    // naming the key; webhooks answered 503 for the provider to retry), and
    // they are left as they are.
    let ingress = place.start(keyring_config("b", &[("b", &key_b)])).await;
    let status = ingress.credentials(&made[0]).await.expect_err("no key a");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("\"a\""), "{}", status.message());
    assert_eq!(ingress.webhook(&made[0], "wh-early").await, 503);
    ingress
        .metric_reaches("telenet_ingress_channel_secrets_unreadable", 7.0)
        .await;
    assert_eq!(
        ingress.metric("telenet_ingress_channel_secrets{key=\"a\",state=\"missing\"}"),
        Some(7.0)
    );
    ingress.stop().await;
    place.assert_all_sealed_under("a", &secrets).await;

    // Key b current, a kept for reading: the background task re-seals
    // every secret under b (in batches of 3), reading all along.
    let ingress = place
        .start(keyring_config("b", &[("a", &key_a), ("b", &key_b)]))
        .await;
    ingress
        .metric_reaches(
            "telenet_ingress_channel_secrets{key=\"b\",state=\"current\"}",
            7.0,
        )
        .await;
    assert_eq!(
        ingress.metric("telenet_ingress_channel_secrets_resealed_total"),
        Some(7.0)
    );
    assert_eq!(
        ingress.metric("telenet_ingress_channel_secrets{key=\"a\",state=\"old\"}"),
        None
    );
    assert_eq!(
        ingress.metric("telenet_ingress_channel_secrets_unreadable"),
        Some(0.0)
    );
    for m in &made {
        assert_eq!(ingress.credentials(m).await.expect("readable"), m.secret);
    }
    ingress.stop().await;
    place.assert_all_sealed_under("b", &secrets).await;

    // What `telenet secrets status` reports: everything under b, a unused.
    let keyring = Keyring::new("b", [("a", &key_a), ("b", &key_b)]).expect("keyring");
    let status = Secrets::new(place.db().await, Arc::new(keyring), 10)
        .status()
        .await
        .expect("status");
    assert_eq!(status.pending(), 0);
    assert_eq!(status.unused_keys(), ["a"]);
    assert!(
        status.to_string().contains("(may be removed): a"),
        "{status:?}"
    );

    // Key a removed: every channel still reads and verifies its webhooks.
    let ingress = place.start(keyring_config("", &[("b", &key_b)])).await;
    for (i, m) in made.iter().enumerate() {
        assert_eq!(ingress.credentials(m).await.expect("readable"), m.secret);
        assert_eq!(ingress.webhook(m, &format!("wh-{i}")).await, 200);
    }
    // A new channel is sealed under b as well.
    let new = ingress.create("ws1", "After").await;
    ingress.stop().await;
    let mut all = secrets.clone();
    all.push(new.secret);
    place.assert_all_sealed_under("b", &all).await;
}

async fn plain_text_secrets_from_before_are_sealed_at_start(backend: Backend) {
    let place = Place::new(backend).await;
    // The database as it was before secrets were sealed: the first
    // migration only, secrets in plain text.
    let before = Migrations {
        postgres: &MIGRATIONS.postgres[..1],
        sqlite: &MIGRATIONS.sqlite[..1],
    };
    let db = place.db().await;
    db.migrate(&before).await.expect("migrate to 0100");
    let mut made = Vec::new();
    for (i, ws) in ["ws1", "ws1", "ws2"].iter().enumerate() {
        let id = uuid::Uuid::now_v7().to_string();
        let secret = Secret::generate().expect("rng").expose();
        sqlx::query(
            "INSERT INTO channels (id, workspace_id, kind, name, outbound_url, secret, created_at) \
             VALUES ($1, $2, $3, $4, 'http://shop.example/in', $5, $6)",
        )
        .bind(&id)
        .bind(*ws)
        .bind(i64::from(ChannelKind::Custom as i32))
        .bind(format!("Old {i}"))
        .bind(&secret)
        .bind(1_000 + i64::try_from(i).expect("small"))
        .execute(db.pool())
        .await
        .expect("plain-text row");
        made.push((ws.to_string(), id, secret));
    }
    db.close().await;

    // Started (the dev server's way: a local key), migrated: the plain-text
    // rows are sealed in the background, then none remain.
    let ingress = place
        .start(EncryptionConfig {
            reseal_batch: 2,
            ..EncryptionConfig::default()
        })
        .await;
    ingress
        .metric_reaches(
            "telenet_ingress_channel_secrets{key=\"local\",state=\"current\"}",
            3.0,
        )
        .await;
    assert_eq!(
        ingress.metric("telenet_ingress_channel_secrets{key=\"plaintext\",state=\"plaintext\"}"),
        None
    );
    let made: Vec<Made> = made
        .into_iter()
        .map(|(workspace, id, secret)| Made {
            workspace,
            id,
            secret,
        })
        .collect();
    for m in &made {
        assert_eq!(ingress.credentials(m).await.expect("readable"), m.secret);
    }
    // Its webhooks verify with the secret it always had.
    assert_eq!(ingress.webhook(&made[0], "wh-1").await, 200);
    ingress.stop().await;
    let secrets: Vec<String> = made.iter().map(|m| m.secret.clone()).collect();
    place.assert_all_sealed_under("local", &secrets).await;
}

async fn two_replicas_reseal_at_once_and_every_secret_still_opens(backend: Backend) {
    let place = Place::new(backend).await;
    let (key_a, key_b) = (generate_key().expect("rng"), generate_key().expect("rng"));
    let ingress = place.start(keyring_config("a", &[("a", &key_a)])).await;
    let mut made = Vec::new();
    for i in 0..12 {
        made.push(ingress.create("ws1", &format!("Shop {i}")).await);
    }
    ingress.stop().await;

    // Two replicas, each with its own pool, re-seal the same rows at once:
    // each secret is replaced by one of them, the other leaves it.
    let replica = |db: Db| {
        let keyring = Keyring::new("b", [("a", &key_a), ("b", &key_b)]).expect("keyring");
        Secrets::new(db, Arc::new(keyring), 2)
    };
    let (one, two) = (replica(place.db().await), replica(place.db().await));
    let token = CancellationToken::new();
    let (first, second) = tokio::join!(one.reseal(&token), two.reseal(&token));
    let (first, second) = (first.expect("one"), second.expect("two"));
    assert_eq!(first.resealed + second.resealed, 12, "{first:?} {second:?}");
    assert_eq!(first.unreadable + second.unreadable, 0);
    assert_eq!(one.status().await.expect("status").pending(), 0);
    let secrets: Vec<String> = made.iter().map(|m| m.secret.clone()).collect();
    place.assert_all_sealed_under("b", &secrets).await;

    let ingress = place.start(keyring_config("b", &[("b", &key_b)])).await;
    for m in &made {
        assert_eq!(ingress.credentials(m).await.expect("readable"), m.secret);
    }
    ingress.stop().await;
}

async fn the_local_key_is_made_once_and_kept_across_restarts(backend: Backend) {
    let place = Place::new(backend).await;
    let ingress = place.start(EncryptionConfig::default()).await;
    let made = ingress.create("ws1", "Shop").await;
    ingress.stop().await;

    let path = place.data_dir.join("channel-secrets.key");
    let key = std::fs::read_to_string(&path).expect("the local key");
    assert!(Keyring::new("", [("local", key.trim())]).is_ok(), "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    place
        .assert_all_sealed_under("local", std::slice::from_ref(&made.secret))
        .await;

    // Restarted with nothing configured: the same key, the channel works.
    let ingress = place.start(EncryptionConfig::default()).await;
    assert_eq!(
        ingress.credentials(&made).await.expect("readable"),
        made.secret
    );
    assert_eq!(ingress.webhook(&made, "wh-1").await, 200);
    ingress.stop().await;
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), key);

    // A damaged key file stops the start and is not replaced.
    std::fs::write(&path, "not a key").expect("damage");
    let error = TestService::try_start(place.setup(EncryptionConfig::default()), start)
        .await
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("channel-secrets.key"), "{message}");
    assert!(message.contains("does not hold a key"), "{message}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), "not a key");

    // Without the local key and without keys: refused, naming the setting.
    let error = TestService::try_start(
        place.setup(EncryptionConfig {
            local_key: false,
            ..EncryptionConfig::default()
        }),
        start,
    )
    .await
    .err()
    .expect("refused");
    assert!(
        format!("{error:#}").contains("ingress.encryption.keys"),
        "{error:#}"
    );
}
