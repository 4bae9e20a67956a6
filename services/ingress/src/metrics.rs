//! Ingress's metrics, registered in the process's registry
//! ([`Metrics::register`]); `docs/metrics.md` lists them for operators.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use telenet_kit::metrics::Metrics;

use crate::secrets::{KeyState, SecretsStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    key: String,
    state: String,
}

/// Ingress's metrics. Clones share the series.
#[derive(Clone, Debug)]
pub struct IngressMetrics {
    secrets: Family<SecretLabels, Gauge>,
    resealed: Counter,
    unreadable: Gauge,
}

impl IngressMetrics {
    /// The metrics in `metrics` (the same ones for every ingress of the
    /// process).
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            secrets: metrics.register(
                "ingress_channel_secrets",
                "Stored channel secrets by the key they are sealed under (plaintext: not sealed yet) and its state (current, old, missing, plaintext)",
                Family::default,
            ),
            resealed: metrics.register(
                "ingress_channel_secrets_resealed",
                "Channel secrets this process sealed under the current key in place of an old key or plain text",
                Counter::default,
            ),
            unreadable: metrics.register(
                "ingress_channel_secrets_unreadable",
                "Channel secrets the last re-sealing pass could not open (sealed under a key not in the keyring, or altered)",
                Gauge::default,
            ),
        }
    }

    /// The counts of `status` (series of keys no longer used go away).
    pub fn set_status(&self, status: &SecretsStatus) {
        self.secrets.clear();
        for count in &status.by_key {
            let key = count.key.as_deref().unwrap_or("plaintext");
            self.secrets
                .get_or_create(&SecretLabels {
                    key: key.to_owned(),
                    state: count.state.as_str().to_owned(),
                })
                .set(i64::try_from(count.count).unwrap_or(i64::MAX));
        }
    }

    /// `n` more secrets re-sealed.
    pub fn count_resealed(&self, n: u64) {
        self.resealed.inc_by(n);
    }

    /// What the last pass could not open.
    pub fn set_unreadable(&self, n: u64) {
        self.unreadable.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

impl KeyState {
    /// The metric label and status word.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Current => "current",
            KeyState::Old => "old",
            KeyState::Missing => "missing",
            KeyState::Plaintext => "plaintext",
        }
    }
}
