//! The suite's configuration: defaults are the dev server's; then an optional
//! TOML file, `TELENET_…` environment variables (nested with `__`), and flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use telenet_kit::infra_tls::InfraTlsConfig;

/// A service the suite can run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Ingress,
    Contacts,
    Conversations,
    Media,
    Dispatch,
    Reporting,
    Gateway,
}

impl ServiceName {
    pub const ALL: [ServiceName; 7] = [
        ServiceName::Ingress,
        ServiceName::Contacts,
        ServiceName::Conversations,
        ServiceName::Media,
        ServiceName::Dispatch,
        ServiceName::Reporting,
        ServiceName::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Ingress => "ingress",
            ServiceName::Contacts => "contacts",
            ServiceName::Conversations => "conversations",
            ServiceName::Media => "media",
            ServiceName::Dispatch => "dispatch",
            ServiceName::Reporting => "reporting",
            ServiceName::Gateway => "gateway",
        }
    }

    /// Whether the service owns a database.
    pub fn has_database(self) -> bool {
        !matches!(self, ServiceName::Gateway)
    }
}

/// Where each service's gRPC API is reached by the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    pub ingress: String,
    pub contacts: String,
    pub conversations: String,
    pub media: String,
    pub dispatch: String,
    pub reporting: String,
}

impl Endpoints {
    /// The endpoint of the service named `name`.
    pub fn of(&self, name: &str) -> Option<String> {
        let mut endpoints = self.clone();
        endpoints.of_mut(name).map(|e| e.clone())
    }

    /// The endpoint of the service named `name`, to change.
    pub fn of_mut(&mut self, name: &str) -> Option<&mut String> {
        Some(match name {
            "ingress" => &mut self.ingress,
            "contacts" => &mut self.contacts,
            "conversations" => &mut self.conversations,
            "media" => &mut self.media,
            "dispatch" => &mut self.dispatch,
            "reporting" => &mut self.reporting,
            _ => return None,
        })
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        let local = "http://127.0.0.1:50051".to_owned();
        Self {
            ingress: local.clone(),
            contacts: local.clone(),
            conversations: local.clone(),
            media: local.clone(),
            dispatch: local.clone(),
            reporting: local,
        }
    }
}

/// Everything the suite needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the dev server keeps its SQLite databases, blobs and token.
    pub data_dir: PathBuf,
    /// `postgres://…` to keep every service's tables in PostgreSQL (one
    /// schema per service); empty: one SQLite file per service in `data_dir`.
    /// TLS with `?sslmode=verify-full` (the server's certificate and host
    /// name verified; `require` encrypts without verifying).
    pub database_url: String,
    /// TLS to PostgreSQL: a private CA and a client certificate, given to
    /// the connection as `sslrootcert`, `sslcert` and `sslkey`, with
    /// `sslmode=verify-full` unless the URL names `verify-ca` or
    /// `verify-full` itself.
    pub database_tls: telenet_kit::infra_tls::InfraTlsConfig,
    /// `memory://` (in-process), `amqp://…` or `amqps://…` (RabbitMQ; TLS,
    /// the broker's certificate and host name verified).
    pub bus_url: String,
    /// TLS to RabbitMQ (`amqps://` only): a private CA, trusted besides
    /// the public ones, and a client certificate.
    pub bus_tls: telenet_kit::infra_tls::InfraTlsConfig,
    /// Put in front of every exchange and queue name.
    pub bus_prefix: String,
    /// `memory://`, `redis://…` or `rediss://…` (TLS, the server's
    /// certificate and host name verified).
    pub presence_url: String,
    /// TLS to Redis (`rediss://` only): a private CA, trusted instead of
    /// the public ones, and a client certificate.
    pub presence_tls: telenet_kit::infra_tls::InfraTlsConfig,
    /// Put in front of every presence key.
    pub presence_prefix: String,
    /// Where rate limits are counted: `memory://` (this process alone) or
    /// `redis://…` (shared by every replica); empty: the presence store's
    /// `presence_url` (so `telenet dev` counts in memory, a Redis-backed
    /// install in that Redis).
    pub rate_limit_url: String,
    /// Put in front of every rate-limit key; empty: `presence_prefix`.
    pub rate_limit_prefix: String,
    /// Read timeouts of every HTTP listener (gateway, webhooks, metrics).
    pub http: telenet_kit::http::HttpServerConfig,
    /// Where the gRPC server binds (all services of this process). Without
    /// `grpc_tls`, only a loopback address (`telenet serve` also takes
    /// another with `grpc_tls.allow_plaintext`).
    pub grpc_listen: String,
    /// Where the gRPC health service alone is also served, in plaintext,
    /// for probes that cannot present a certificate (the kubelet's); empty:
    /// nowhere.
    pub grpc_health_listen: String,
    /// Where the other services are reached.
    pub endpoints: Endpoints,
    /// Where Prometheus scrapes this process (`GET /metrics`); empty: no
    /// metrics listener.
    pub metrics_listen: String,
    /// Log format.
    pub log_format: telenet_kit::telemetry::LogFormat,
    /// Seed a workspace, an owner and a token on first start (dev server).
    pub seed: bool,
    pub grpc_server: telenet_kit::grpc::GrpcServerConfig,
    pub grpc_client: telenet_kit::grpc::ClientConfig,
    pub grpc_tls: telenet_kit::tls::GrpcTlsConfig,
    pub grpc_auth: telenet_kit::grpc_auth::GrpcAuthConfig,
    pub ingress: telenet_ingress::Config,
    pub contacts: telenet_contacts::Config,
    pub conversations: telenet_conversations::Config,
    pub media: telenet_media::Config,
    pub gateway: telenet_gateway::Config,
    pub dispatch: telenet_dispatch::Config,
    pub reporting: telenet_reporting::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".telenet"),
            database_url: String::new(),
            database_tls: Default::default(),
            bus_url: "memory://".into(),
            bus_tls: Default::default(),
            bus_prefix: String::new(),
            presence_url: "memory://".into(),
            presence_tls: Default::default(),
            presence_prefix: String::new(),
            rate_limit_url: String::new(),
            rate_limit_prefix: String::new(),
            http: Default::default(),
            grpc_listen: "127.0.0.1:50051".into(),
            grpc_health_listen: String::new(),
            endpoints: Endpoints::default(),
            metrics_listen: "127.0.0.1:9090".into(),
            log_format: telenet_kit::telemetry::LogFormat::Pretty,
            seed: true,
            grpc_server: Default::default(),
            grpc_client: Default::default(),
            grpc_tls: Default::default(),
            grpc_auth: Default::default(),
            ingress: Default::default(),
            contacts: Default::default(),
            conversations: Default::default(),
            media: Default::default(),
            gateway: Default::default(),
            dispatch: Default::default(),
            reporting: Default::default(),
        }
    }
}

impl Config {
    /// As the dev server runs it: everything is on this machine, so
    /// channels' receivers may be on loopback (`127.0.0.0/8`, `::1`) when
    /// no private receivers are configured (`ingress.private_receivers`,
    /// `dispatch.private_receivers`). `telenet serve` keeps the defaults:
    /// public addresses only.
    pub fn allowing_loopback_receivers(mut self) -> Self {
        for list in [
            &mut self.ingress.private_receivers,
            &mut self.dispatch.private_receivers,
        ] {
            if list.is_empty() {
                *list = telenet_channels::net::LOOPBACK
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
            }
        }
        self
    }

    /// Whether gRPC may be served as configured: with mutual TLS anywhere;
    /// without, on a loopback address, or (`telenet serve`, not `dev`) where
    /// `grpc_tls.allow_plaintext` says the network authenticates callers.
    pub fn check_grpc_transport(&self, dev: bool) -> anyhow::Result<()> {
        if self.grpc_tls.is_enabled() || is_loopback(&self.grpc_listen) {
            return Ok(());
        }
        let listen = &self.grpc_listen;
        if dev {
            anyhow::bail!(
                "telenet dev serves gRPC without TLS, so only on a loopback address, and grpc_listen is `{listen}`: \
                 bind 127.0.0.1, or set grpc_tls.cert_file, grpc_tls.key_file and grpc_tls.ca_file"
            );
        }
        if !self.grpc_tls.allow_plaintext {
            anyhow::bail!(
                "gRPC on `{listen}` needs mutual TLS between the services: set grpc_tls.cert_file, \
                 grpc_tls.key_file and grpc_tls.ca_file (the Helm chart does), or bind a loopback address; \
                 grpc_tls.allow_plaintext = true serves plaintext anyway, trusting every caller, \
                 only for a network that authenticates them itself"
            );
        }
        tracing::warn!(
            grpc_listen = %listen,
            "gRPC without TLS on a non-loopback address (grpc_tls.allow_plaintext): every caller that reaches it is trusted as a TELENET service"
        );
        Ok(())
    }

    /// Where rate limits are counted, the prefix of their keys and the TLS
    /// files a `rediss://` store is verified with.
    pub fn rate_limit_store(&self) -> (&str, &str, &InfraTlsConfig) {
        static NO_TLS: std::sync::LazyLock<InfraTlsConfig> =
            std::sync::LazyLock::new(InfraTlsConfig::default);
        // The presence store's Redis, with its TLS files, unless another
        // is named (whose CA is then the system's).
        let (url, tls) = if self.rate_limit_url.trim().is_empty() {
            (&self.presence_url, &self.presence_tls)
        } else {
            (&self.rate_limit_url, &*NO_TLS)
        };
        let prefix = if self.rate_limit_prefix.is_empty() {
            &self.presence_prefix
        } else {
            &self.rate_limit_prefix
        };
        (url, prefix, tls)
    }

    /// The database URL of one service.
    pub fn database_url_of(&self, service: ServiceName) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir
                    .join(format!("{}.db", service.as_str()))
                    .display()
            )
        } else {
            self.database_url.clone()
        }
    }
}

/// Whether `listen` (`host:port`) binds a loopback address only.
fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use telenet_kit::infra_tls::InfraTlsConfig;

    use super::*;

    #[test]
    fn only_the_dev_server_allows_loopback_receivers() {
        let served = Config::default();
        assert!(served.ingress.private_receivers.is_empty());
        assert!(served.dispatch.private_receivers.is_empty());
        let dev = Config::default().allowing_loopback_receivers();
        for list in [
            &dev.ingress.private_receivers,
            &dev.dispatch.private_receivers,
        ] {
            assert_eq!(list, &["127.0.0.0/8", "::1/128"]);
        }
        // What an operator configured stays as it is.
        let mut configured = Config::default();
        configured.dispatch.private_receivers = vec!["10.0.0.0/8".into()];
        let dev = configured.allowing_loopback_receivers();
        assert_eq!(dev.dispatch.private_receivers, ["10.0.0.0/8"]);
        assert_eq!(dev.ingress.private_receivers, ["127.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn rate_limits_are_counted_where_presence_is_unless_set() {
        let mut config = Config {
            presence_url: "rediss://cache:6379".into(),
            presence_prefix: "blue:".into(),
            presence_tls: InfraTlsConfig::trusting("/etc/telenet/presence-tls/ca.crt"),
            ..Config::default()
        };
        // The presence store's Redis, verified as presence verifies it.
        let (url, prefix, tls) = config.rate_limit_store();
        assert_eq!((url, prefix), ("rediss://cache:6379", "blue:"));
        assert_eq!(tls, &config.presence_tls);
        let default = Config::default();
        let (url, prefix, _) = default.rate_limit_store();
        assert_eq!((url, prefix), ("memory://", ""));
        config.rate_limit_url = "redis://limits:6379".into();
        config.rate_limit_prefix = "rl:".into();
        let (url, prefix, tls) = config.rate_limit_store();
        assert_eq!((url, prefix), ("redis://limits:6379", "rl:"));
        assert!(tls.is_empty(), "another Redis: the presence CA is not its");
    }

    #[test]
    fn private_receivers_are_read_from_the_environment_as_the_chart_writes_them() {
        let env = [(
            "TELENET_DISPATCH__PRIVATE_RECEIVERS".to_owned(),
            "[10.20.0.0/16, fd00::/8, 192.168.1.20, receiver.corp.internal]".to_owned(),
        )];
        let config: Config = telenet_kit::config::load_with_env(None, (), env).expect("config");
        assert_eq!(
            config.dispatch.private_receivers,
            [
                "10.20.0.0/16",
                "fd00::/8",
                "192.168.1.20",
                "receiver.corp.internal"
            ]
        );
    }

    #[test]
    fn datastore_tls_files_are_read_from_the_environment_as_the_chart_writes_them() {
        let env = [
            (
                "TELENET_DATABASE_TLS__CA_FILE",
                "/etc/telenet/database-tls/ca.crt",
            ),
            (
                "TELENET_DATABASE_TLS__CERT_FILE",
                "/etc/telenet/database-tls/tls.crt",
            ),
            (
                "TELENET_DATABASE_TLS__KEY_FILE",
                "/etc/telenet/database-tls/tls.key",
            ),
            ("TELENET_BUS_TLS__CA_FILE", "/etc/telenet/bus-tls/ca.crt"),
            (
                "TELENET_PRESENCE_TLS__CA_FILE",
                "/etc/telenet/presence-tls/ca.crt",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config: Config = telenet_kit::config::load_with_env(None, (), env).expect("config");
        assert_eq!(
            config.database_tls,
            InfraTlsConfig::trusting("/etc/telenet/database-tls/ca.crt").with_identity(
                "/etc/telenet/database-tls/tls.crt",
                "/etc/telenet/database-tls/tls.key"
            )
        );
        assert_eq!(
            config.bus_tls,
            InfraTlsConfig::trusting("/etc/telenet/bus-tls/ca.crt")
        );
        assert_eq!(
            config.presence_tls,
            InfraTlsConfig::trusting("/etc/telenet/presence-tls/ca.crt")
        );
        assert!(Config::default().database_tls.is_empty());
    }

    #[test]
    fn plaintext_grpc_is_for_loopback_unless_tls_or_allowed() {
        let with = |listen: &str, tls: bool, allow: bool| Config {
            grpc_listen: listen.into(),
            grpc_tls: telenet_kit::tls::GrpcTlsConfig {
                cert_file: if tls {
                    "tls.crt".into()
                } else {
                    PathBuf::new()
                },
                allow_plaintext: allow,
                ..Default::default()
            },
            ..Config::default()
        };
        for loopback in [
            "127.0.0.1:50051",
            "[::1]:50051",
            "localhost:50051",
            "127.0.0.1:0",
        ] {
            with(loopback, false, false)
                .check_grpc_transport(true)
                .expect("dev on loopback");
            with(loopback, false, false)
                .check_grpc_transport(false)
                .expect("serve on loopback");
        }
        for open in [
            "0.0.0.0:50051",
            "[::]:50051",
            "10.0.0.7:50051",
            "telenet:50051",
        ] {
            let error = with(open, false, false)
                .check_grpc_transport(true)
                .expect_err("dev refuses");
            assert!(error.to_string().contains("grpc_tls.cert_file"), "{error}");
            let error = with(open, false, true)
                .check_grpc_transport(true)
                .expect_err("dev refuses even when plaintext is allowed");
            assert!(error.to_string().contains(open), "{error}");
            with(open, false, false)
                .check_grpc_transport(false)
                .expect_err("serve refuses by default");
            with(open, false, true)
                .check_grpc_transport(false)
                .expect("serve where plaintext is allowed");
            with(open, true, false)
                .check_grpc_transport(true)
                .expect("dev with TLS");
            with(open, true, false)
                .check_grpc_transport(false)
                .expect("serve with TLS");
        }
    }
}
