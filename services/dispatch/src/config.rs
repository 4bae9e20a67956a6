//! Dispatch settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use telenet_channels::net::{AllowList, Egress};

use crate::Error;

/// Dispatch settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time allowed to open a connection to a channel's outbound URL.
    #[serde(with = "telenet_kit::config::duration")]
    pub http_connect_timeout: Duration,
    /// Time allowed for a whole attempt (connect, send, read the answer);
    /// past it the attempt counts as failed and is retried.
    #[serde(with = "telenet_kit::config::duration")]
    pub http_timeout: Duration,
    /// Attempts per message, the first included, before its delivery is
    /// FAILED. The bus's retry policy must allow at least `max_attempts - 1`
    /// retries, or the bus dead-letters the event first.
    pub max_attempts: u32,
    /// Outbound messages attempted at once.
    pub concurrency: usize,
    /// How long a channel's outbound URL and secret are reused before ingress
    /// is asked again (`0s`: ask every time). Short, so a changed channel is
    /// picked up quickly; a rejected send drops the entry at once.
    #[serde(with = "telenet_kit::config::duration")]
    pub directory_cache_ttl: Duration,
    /// Time allowed for a lookup in the channel directory.
    #[serde(with = "telenet_kit::config::duration")]
    pub directory_timeout: Duration,
    /// How long the download links of outbound attachments work (1 minute
    /// to 7 days): long enough for a receiver that fetches late or retries,
    /// short enough that a leaked link soon stops working.
    #[serde(with = "telenet_kit::config::duration")]
    pub download_link_ttl: Duration,
    /// How long an attempt waits for the media service to make a voice
    /// note's variant before it is retried later (at most 30 s).
    #[serde(with = "telenet_kit::config::duration")]
    pub voice_variant_wait: Duration,
    /// Receivers on non-public addresses that messages may still be sent
    /// to (on-premise receivers): networks (`10.20.0.0/16`, `fd00::/8`),
    /// addresses (`192.168.1.20`) or host names (`receiver.corp.internal`,
    /// which may then resolve to any address). Empty: only public addresses
    /// are reached; loopback, private, link-local (cloud metadata) and other
    /// internal addresses are refused. Keep `ingress.private_receivers` the
    /// same, or such channels cannot be created. `telenet dev` allows
    /// loopback when this is empty.
    pub private_receivers: Vec<String>,
    /// How long an outgoing message may wait to be sent; past it, a message
    /// still pending fails ("not delivered within 15 minutes") and is never
    /// sent later, also when its request arrives late (an outage).
    #[serde(with = "telenet_kit::config::duration")]
    pub pending_deadline: Duration,
    /// How often messages pending past `pending_deadline` are looked for.
    #[serde(with = "telenet_kit::config::duration")]
    pub sweep_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_connect_timeout: Duration::from_secs(5),
            http_timeout: Duration::from_secs(15),
            max_attempts: 5,
            concurrency: 32,
            directory_cache_ttl: Duration::from_secs(30),
            directory_timeout: Duration::from_secs(5),
            download_link_ttl: Duration::from_secs(86_400),
            voice_variant_wait: Duration::from_secs(10),
            private_receivers: Vec::new(),
            pending_deadline: Duration::from_secs(900),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Refuse settings that would only fail later.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let ttl = self.download_link_ttl;
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600)).contains(&ttl) {
            return Err(Error::Config {
                key: "download_link_ttl",
                reason: "must be between 1m and 7d".into(),
            });
        }
        for (key, value) in [
            ("pending_deadline", self.pending_deadline),
            ("sweep_interval", self.sweep_interval),
        ] {
            if value < Duration::from_millis(1) {
                return Err(Error::Config {
                    key,
                    reason: "must be at least 1ms".into(),
                });
            }
        }
        self.egress()?;
        Ok(())
    }

    /// Where sends may go: public addresses and `private_receivers`.
    pub(crate) fn egress(&self) -> Result<Egress, Error> {
        let allow = AllowList::parse(&self.private_receivers).map_err(|reason| Error::Config {
            key: "private_receivers",
            reason,
        })?;
        Ok(Egress::new(allow, "dispatch.private_receivers"))
    }

    /// How long a consumer may hold a delivery's lease: longer than anything
    /// one attempt can take, so a live attempt is never taken over, yet short
    /// enough that a crashed consumer's delivery is retried soon.
    pub(crate) fn lease(&self) -> Duration {
        self.directory_timeout
            + self.voice_variant_wait
            + self.http_timeout
            + Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_durations_with_units_and_keeps_defaults() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "http_timeout": "2s",
            "directory_cache_ttl": "0s",
            "max_attempts": 3,
        }))
        .expect("config");
        assert_eq!(config.http_timeout, Duration::from_secs(2));
        assert_eq!(config.directory_cache_ttl, Duration::ZERO);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.concurrency, 32);
        assert_eq!(config.http_connect_timeout, Duration::from_secs(5));
        let written = serde_json::to_value(Config::default()).expect("serialize");
        assert_eq!(written["http_timeout"], "15s");
        assert!(serde_json::from_value::<Config>(serde_json::json!({"max_attempt": 3})).is_err());
    }

    #[test]
    fn deadlines_and_allow_lists_are_checked() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "private_receivers": ["10.0.0.0/8", "receiver.corp.internal"],
            "pending_deadline": "2m",
        }))
        .expect("config");
        assert!(config.validate().is_ok());
        assert_eq!(config.pending_deadline, Duration::from_secs(120));
        assert_eq!(Config::default().pending_deadline, Duration::from_secs(900));
        assert!(Config::default().private_receivers.is_empty());
        for (config, key) in [
            (
                Config {
                    private_receivers: vec!["10.0.0.0/40".into()],
                    ..Config::default()
                },
                "private_receivers",
            ),
            (
                Config {
                    pending_deadline: Duration::ZERO,
                    ..Config::default()
                },
                "pending_deadline",
            ),
            (
                Config {
                    sweep_interval: Duration::ZERO,
                    ..Config::default()
                },
                "sweep_interval",
            ),
        ] {
            match config.validate() {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn download_links_live_between_a_minute_and_a_week() {
        assert!(Config::default().validate().is_ok());
        for ttl in [
            Duration::from_secs(59),
            Duration::from_secs(7 * 24 * 3600 + 1),
        ] {
            let config = Config {
                download_link_ttl: ttl,
                ..Config::default()
            };
            assert!(matches!(
                config.validate(),
                Err(Error::Config {
                    key: "download_link_ttl",
                    ..
                })
            ));
        }
    }
}
