//! TLS to PostgreSQL, RabbitMQ and Redis (ADR 17, docs/security.md),
//! against private servers started here with certificates made here and
//! listening for TLS only. For each: trusting the private CA, the store
//! migrates and queries, the bus publishes and consumes, presence writes
//! and reads; without trusting it the connection is refused for the
//! certificate; a plaintext client is refused; a client certificate is
//! presented when configured.
//!
//! Last, the whole suite starts on the three, configured as the chart
//! configures it (`database_tls`, `bus_tls`, `presence_tls`), and does not
//! start without the broker's CA.
//!
//! One server of each kind per test, and one RabbitMQ for the binary (it
//! takes seconds to boot): the bus checks and the suite share it. Each
//! server stops when its test ends, passed or failed. A test is skipped, loudly,
//! only when the server's binaries are not installed.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use telenet::{ServiceName, Suite};
use telenet_bus::{Event, RetryPolicy, SubscribeSpec};
use telenet_kit::infra_tls::InfraTlsConfig;
use telenet_presence::{Status, Thresholds};
use telenet_store::{Db, Migrations};
use telenet_tests::infra::{self, POSTGRES_CERT_USER, Postgres, Rabbit, Redis, ServerTls};
use telenet_tests::world;
use tokio_util::sync::CancellationToken;

/// How long one round trip over a fresh connection may take.
const WITHIN: Duration = Duration::from_secs(30);

/// A CA, a server certificate it signed (for `localhost` and 127.0.0.1), a
/// client certificate it signed (named [`POSTGRES_CERT_USER`]), and a
/// second, untrusted CA with a client certificate of its own.
struct Pki {
    dir: tempfile::TempDir,
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, with `common_name`.
    fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("names");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = Ca::new("telenet infrastructure test CA");
        let other = Ca::new("someone else's CA");
        let (server_cert, server_key) = ca.issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            ca.issue(POSTGRES_CERT_USER, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let (other_cert, other_key) =
            other.issue(POSTGRES_CERT_USER, &[], ExtendedKeyUsagePurpose::ClientAuth);
        for (name, text) in [
            ("ca.crt", &ca.pem),
            ("server.crt", &server_cert),
            ("server.key", &server_key),
            ("client.crt", &client_cert),
            ("client.key", &client_key),
            ("other-ca.crt", &other.pem),
            ("other-client.crt", &other_cert),
            ("other-client.key", &other_key),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, require_client_cert: bool) -> ServerTls {
        ServerTls {
            cert_file: self.path("server.crt"),
            key_file: self.path("server.key"),
            ca_file: self.path("ca.crt"),
            require_client_cert,
        }
    }

    /// Trusting our CA.
    fn trusting(&self) -> InfraTlsConfig {
        InfraTlsConfig::trusting(self.path("ca.crt"))
    }

    /// Trusting only the other CA.
    fn trusting_another_ca(&self) -> InfraTlsConfig {
        InfraTlsConfig::trusting(self.path("other-ca.crt"))
    }

    /// Trusting our CA and presenting our client certificate.
    fn with_client_cert(&self) -> InfraTlsConfig {
        self.trusting()
            .with_identity(self.path("client.crt"), self.path("client.key"))
    }

    /// Trusting our CA and presenting a certificate of the other CA.
    fn with_foreign_client_cert(&self) -> InfraTlsConfig {
        self.trusting()
            .with_identity(self.path("other-client.crt"), self.path("other-client.key"))
    }
}

/// A directory for the servers that the PostgreSQL user can enter (it
/// runs as `postgres` when the tests run as root).
fn server_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("telenet-infra-tls-")
        .tempdir()
        .expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("permissions");
    dir
}

/// Whether `what` is installed; if not, says so loudly (the test is then
/// skipped, which CI and this project's machines never do).
fn installed(what: &str, installed: bool) -> bool {
    if !installed {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {what} is not installed on this machine; \
             the TLS test against it did not run !!!!!!!!\n"
        );
    }
    installed
}

/// `result`'s error, or a panic saying what should have failed.
fn refused<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("{what}: connected, but must be refused"),
        Err(error) => {
            let message = error.to_string();
            eprintln!("{what}: refused as it must be: {message}");
            message
        }
    }
}

/// Whether `message` says the certificate was not trusted.
fn says_untrusted_certificate(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("certificate")
        && (message.contains("unknownissuer")
            || message.contains("unknown issuer")
            || message.contains("unknown ca"))
}

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WITHIN, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {WITHIN:?}"),
    }
}

// ------------------------------------------------------------- PostgreSQL

const NO_MIGRATIONS: Migrations = Migrations {
    postgres: &[],
    sqlite: &[],
};

/// Whether the session runs over TLS, as the server sees it.
async fn session_uses_tls(db: &Db) -> bool {
    let row: (bool,) =
        telenet_store::sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(db.pool())
            .await
            .expect("pg_stat_ssl");
    row.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_a_private_ca() {
    if !installed("PostgreSQL (initdb, pg_ctl)", infra::postgres_installed()) {
        return;
    }
    let pki = Pki::new();
    let root = server_root();
    let pg = Postgres::start_tls(root.path(), &pki.server(false))
        .await
        .expect("a private PostgreSQL with TLS");
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);

    // Trusting the CA: migrations run and queries answer, over TLS.
    let db = bounded(
        "connect trusting the CA",
        Db::connect_with_tls(&base, "tls_check", &pki.trusting()),
    )
    .await
    .expect("connects trusting the private CA");
    db.migrate(&NO_MIGRATIONS).await.expect("migrates over TLS");
    assert!(session_uses_tls(&db).await, "the session must use TLS");
    let outbox: (i64,) = telenet_store::sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(db.pool())
        .await
        .expect("the migrated outbox table answers");
    assert_eq!(outbox.0, 0);
    db.close().await;

    // The same through the URL's own parameters.
    let by_url = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        pki.path("ca.crt").display()
    );
    let db = bounded(
        "connect with sslrootcert",
        Db::connect(&by_url, "tls_check"),
    )
    .await
    .expect("connects with sslrootcert in the URL");
    assert!(session_uses_tls(&db).await);
    db.close().await;

    // Without the CA, or with another one: refused for the certificate.
    for (what, tls) in [
        ("public CAs only", InfraTlsConfig::default()),
        ("another CA", pki.trusting_another_ca()),
    ] {
        let url = format!("{base}?sslmode=verify-full");
        let error = refused(
            what,
            bounded(what, Db::connect_with_tls(&url, "tls_check", &tls)).await,
        );
        assert!(says_untrusted_certificate(&error), "{what}: {error}");
    }

    // Plaintext: the server has no entry for it.
    let plain = format!("{base}?sslmode=disable");
    let error = refused(
        "plaintext",
        bounded("plaintext", Db::connect(&plain, "tls_check")).await,
    );
    assert!(error.contains("no encryption"), "plaintext: {error}");

    // The certificate user: with the client certificate in, without it out.
    let cert_user = format!(
        "postgres://{POSTGRES_CERT_USER}@127.0.0.1:{}/postgres",
        pg.port
    );
    let db = bounded(
        "connect with a client certificate",
        Db::connect_with_tls(&cert_user, "tls_check", &pki.with_client_cert()),
    )
    .await
    .expect("the client certificate authenticates");
    assert!(session_uses_tls(&db).await);
    db.close().await;
    let error = refused(
        "certificate user without a certificate",
        bounded(
            "no client certificate",
            Db::connect_with_tls(&cert_user, "tls_check", &pki.trusting()),
        )
        .await,
    );
    assert!(
        error.contains("certificate"),
        "no client certificate: {error}"
    );
}

// --------------------------------------------------------------- RabbitMQ

/// Publishes one event and consumes it back.
async fn bus_round_trip(bus: &telenet_bus::SharedBus) {
    let mut subscription = bounded(
        "subscribe",
        bus.subscribe(SubscribeSpec::new("tls-check", &["tls.checked"])),
    )
    .await
    .expect("subscribes over TLS");
    let event = Event::new("tls.checked", b"over tls".to_vec());
    bounded("publish", bus.publish(std::slice::from_ref(&event)))
        .await
        .expect("publishes over TLS, confirmed");
    let delivery = bounded("consume", subscription.next())
        .await
        .expect("the event comes back");
    assert_eq!(delivery.event.id, event.id);
    assert_eq!(&delivery.event.payload[..], b"over tls");
    delivery.ack().await.expect("acknowledged");
}

async fn bus(
    url: &str,
    tls: &InfraTlsConfig,
) -> Result<telenet_bus::SharedBus, telenet_bus::BusError> {
    let prefix = format!("tls-{}.", uuid::Uuid::new_v4().simple());
    bounded(
        "connect to RabbitMQ",
        telenet_bus::connect_with_tls(url, &prefix, RetryPolicy::default(), tls),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_tls_with_a_private_ca_and_the_suite_on_tls_datastores() {
    if !installed("RabbitMQ (rabbitmq-server)", infra::rabbitmq_installed()) {
        return;
    }
    let pki = Pki::new();
    let root = server_root();
    let rabbit = Rabbit::start_tls(root.path(), &pki.server(false))
        .await
        .expect("a private RabbitMQ with a TLS listener");
    let url = rabbit.url();
    assert!(url.starts_with("amqps://"), "{url}");

    // Trusting the CA: publish and consume.
    let trusted = bus(&url, &pki.trusting())
        .await
        .expect("connects trusting the private CA");
    bus_round_trip(&trusted).await;

    // Without the CA, or with another one: refused for the certificate.
    for (what, tls) in [
        ("public CAs only", InfraTlsConfig::default()),
        ("another CA", pki.trusting_another_ca()),
    ] {
        let error = refused(what, bus(&url, &tls).await);
        assert!(says_untrusted_certificate(&error), "{what}: {error}");
    }

    // Plaintext AMQP to the TLS listener.
    let plain = url.replacen("amqps://", "amqp://", 1);
    let error = refused("plaintext", bus(&plain, &InfraTlsConfig::default()).await);
    // The TLS listener either answers bytes that are not AMQP (the error
    // then says "use amqps://") or resets the connection first.
    assert!(
        error.contains("use amqps://") || error.contains("Connection reset by peer"),
        "plaintext: {error}"
    );

    // A client certificate is presented: the broker checks it (verify_peer),
    // so one from the CA passes and one from another CA is refused.
    let with_cert = bus(&url, &pki.with_client_cert())
        .await
        .expect("connects presenting a certificate from the CA");
    bus_round_trip(&with_cert).await;
    refused(
        "a client certificate from another CA",
        bus(&url, &pki.with_foreign_client_cert()).await,
    );

    // The whole suite, configured as the chart configures it, on the three
    // datastores listening for TLS only (this binary's one RabbitMQ).
    if !installed("PostgreSQL (initdb, pg_ctl)", infra::postgres_installed())
        || !installed("Redis (redis-server)", infra::redis_installed())
    {
        return;
    }
    let pg = Postgres::start_tls(root.path(), &pki.server(false))
        .await
        .expect("a private PostgreSQL with TLS");
    let redis = Redis::start_tls(root.path(), &pki.server(false))
        .await
        .expect("a private Redis listening for TLS");
    let data = tempfile::tempdir().expect("data directory");
    let mut config = world::embedded(data.path());
    config.database_url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    config.database_tls = pki.trusting();
    config.bus_url = url.clone();
    config.bus_tls = pki.trusting();
    config.bus_prefix = "suite.".into();
    config.presence_url = redis.url();
    config.presence_tls = pki.trusting();

    // Each datastore's CA is needed: without the bus's, the suite does not
    // start, and says why.
    let mut untrusting = config.clone();
    untrusting.bus_tls = InfraTlsConfig::default();
    let error = match Suite::new(untrusting, ServiceName::ALL)
        .start(CancellationToken::new())
        .await
    {
        Ok(_) => panic!("the suite started without trusting the broker's CA"),
        Err(error) => format!("{error:#}"),
    };
    assert!(says_untrusted_certificate(&error), "{error}");

    bounded(
        "migrate over TLS",
        Suite::new(config.clone(), ServiceName::ALL)
            .with_retry(world::test_retry())
            .migrate(),
    )
    .await
    .expect("every service's schema migrates over TLS");
    let (running, _token) =
        bounded("start over TLS", world::start(config, &ServiceName::ALL)).await;
    assert!(
        running.seed.is_some(),
        "the seed workspace is written through the services to PostgreSQL"
    );
    bounded("shutdown", running.shutdown()).await;
}

// ------------------------------------------------------------------ Redis

async fn presence(
    url: &str,
    tls: &InfraTlsConfig,
) -> Result<telenet_presence::SharedPresence, telenet_presence::PresenceError> {
    let prefix = format!("tls-{}:", uuid::Uuid::new_v4().simple());
    bounded(
        "connect to Redis",
        telenet_presence::connect_with_tls(url, &prefix, Thresholds::default(), tls),
    )
    .await
}

/// Connects and reads: with TLS 1.3 a server may refuse the client's
/// certificate only after the client considers itself connected, so the
/// refusal can come with the first command.
async fn presence_answers(url: &str, tls: &InfraTlsConfig) -> Result<(), String> {
    let store = presence(url, tls).await.map_err(|e| e.to_string())?;
    bounded("get", store.get("ws-tls", "agent-1"))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sets a status and reads it back.
async fn presence_round_trip(store: &telenet_presence::SharedPresence) {
    let set = bounded(
        "set_status",
        store.set_status("ws-tls", "agent-1", Status::Away),
    )
    .await
    .expect("writes over TLS");
    assert_eq!(set.chosen, Status::Away);
    let got = bounded("get", store.get("ws-tls", "agent-1"))
        .await
        .expect("reads over TLS");
    assert_eq!(got.chosen, Status::Away);
    assert_eq!(got.status, Status::Away);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    if !installed("Redis (redis-server)", infra::redis_installed()) {
        return;
    }
    let pki = Pki::new();
    let root = server_root();
    let redis = Redis::start_tls(root.path(), &pki.server(false))
        .await
        .expect("a private Redis listening for TLS");
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");

    let trusted = presence(&url, &pki.trusting())
        .await
        .expect("connects trusting the private CA");
    presence_round_trip(&trusted).await;

    for (what, tls) in [
        ("public CAs only", InfraTlsConfig::default()),
        ("another CA", pki.trusting_another_ca()),
    ] {
        let error = refused(what, presence_answers(&url, &tls).await);
        assert!(says_untrusted_certificate(&error), "{what}: {error}");
    }

    let plain = url.replacen("rediss://", "redis://", 1);
    refused(
        "plaintext",
        presence_answers(&plain, &InfraTlsConfig::default()).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_requires_a_client_certificate() {
    if !installed("Redis (redis-server)", infra::redis_installed()) {
        return;
    }
    let pki = Pki::new();
    let root = server_root();
    let redis = Redis::start_tls(root.path(), &pki.server(true))
        .await
        .expect("a private Redis requiring client certificates");
    let url = redis.url();

    let with_cert = presence(&url, &pki.with_client_cert())
        .await
        .expect("connects with a client certificate from the CA");
    presence_round_trip(&with_cert).await;
    refused(
        "no client certificate",
        presence_answers(&url, &pki.trusting()).await,
    );
}
