//! Dispatch's metrics, registered in the process's registry
//! ([`Metrics::register`]); `docs/metrics.md` lists them for operators.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use telenet_kit::metrics::{Histograms, Metrics, histograms};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispatchLabels {
    channel_kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelKindLabels {
    channel_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldLabels {
    channel_kind: String,
    cause: String,
}

/// Why a message was held before its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCause {
    /// A sending limit of the provider (per channel or per recipient).
    RateLimit,
    /// The channel is paused: its provider throttled it.
    Paused,
}

impl HoldCause {
    fn as_str(self) -> &'static str {
        match self {
            HoldCause::RateLimit => "rate_limit",
            HoldCause::Paused => "paused",
        }
    }
}

/// How one outbound delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// The channel accepted the message.
    Sent,
    /// Passing trouble; the message will be attempted again.
    Retry,
    /// Rejected for good, or out of attempts.
    Failed,
}

impl DispatchOutcome {
    fn as_str(self) -> &'static str {
        match self {
            DispatchOutcome::Sent => "sent",
            DispatchOutcome::Retry => "retry",
            DispatchOutcome::Failed => "failed",
        }
    }
}

/// Dispatch's metrics. Clones share the series.
#[derive(Clone, Debug)]
pub struct DispatchMetrics {
    attempts: Family<DispatchLabels, Counter>,
    overdue: Counter,
    held: Family<HeldLabels, Counter>,
    pauses: Family<ChannelKindLabels, Counter>,
    /// The shared latency buckets (up to half a minute, past the longest
    /// send timeout).
    send_duration: Histograms<ChannelKindLabels>,
}

impl DispatchMetrics {
    /// The metrics in `metrics` (the same ones for every dispatch of the
    /// process).
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            attempts: metrics.register(
                "dispatch_attempts",
                "Outbound delivery attempts, by channel kind and outcome (sent, retry, failed)",
                Family::default,
            ),
            overdue: metrics.register(
                "dispatch_overdue",
                "Outbound messages failed because they were not sent within dispatch.pending_deadline",
                Counter::default,
            ),
            held: metrics.register(
                "dispatch_held",
                "Holds of outbound messages before an attempt (a message waits once per refusal), without calling the provider, by channel kind and cause (rate_limit, paused)",
                Family::default,
            ),
            pauses: metrics.register(
                "dispatch_channel_pauses",
                "Channels paused for every replica because their provider throttled a send, by channel kind",
                Family::default,
            ),
            send_duration: metrics.register(
                "dispatch_send_duration_seconds",
                "Time a channel's API took to answer an outbound send",
                histograms,
            ),
        }
    }

    /// One outbound delivery attempt on a channel of `channel_kind`
    /// (`custom`, `whatsapp`, …; `unknown` when the channel could not be
    /// looked up).
    pub fn count_dispatch(&self, channel_kind: &str, outcome: DispatchOutcome) {
        self.attempts
            .get_or_create(&DispatchLabels {
                channel_kind: channel_kind.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// One outbound message failed for being past its deadline.
    pub fn count_overdue(&self) {
        self.overdue.inc();
    }

    /// `n` outbound messages failed for being past their deadline.
    pub fn count_overdue_by(&self, n: usize) {
        self.overdue.inc_by(n as u64);
    }

    /// One message held before its attempt on a channel of `channel_kind`.
    pub fn count_held(&self, channel_kind: &str, cause: HoldCause) {
        self.held
            .get_or_create(&HeldLabels {
                channel_kind: channel_kind.to_owned(),
                cause: cause.as_str().to_owned(),
            })
            .inc();
    }

    /// One channel of `channel_kind` paused after its provider throttled.
    pub fn count_pause(&self, channel_kind: &str) {
        self.pauses
            .get_or_create(&ChannelKindLabels {
                channel_kind: channel_kind.to_owned(),
            })
            .inc();
    }

    /// How long a channel's API took to answer one send.
    pub fn observe_dispatch_send(&self, channel_kind: &str, elapsed: Duration) {
        self.send_duration
            .get_or_create(&ChannelKindLabels {
                channel_kind: channel_kind.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_kit::metrics::sample;

    #[test]
    fn attempts_and_send_times_are_exposed_by_kind_and_outcome() {
        let metrics = Metrics::new();
        let dispatch = DispatchMetrics::register(&metrics);
        dispatch.count_dispatch("custom", DispatchOutcome::Sent);
        dispatch.observe_dispatch_send("custom", Duration::from_millis(12));
        // A second registration (another dispatch in the process) counts
        // into the same series.
        DispatchMetrics::register(&metrics).count_dispatch("custom", DispatchOutcome::Sent);
        DispatchMetrics::register(&metrics).count_dispatch("unknown", DispatchOutcome::Failed);
        dispatch.count_overdue();
        dispatch.count_overdue_by(2);
        dispatch.count_held("telegram", HoldCause::RateLimit);
        dispatch.count_held("telegram", HoldCause::RateLimit);
        dispatch.count_held("telegram", HoldCause::Paused);
        dispatch.count_pause("telegram");
        let text = metrics.encode().expect("encodes");
        for name in [
            "telenet_dispatch_attempts_total",
            "telenet_dispatch_overdue_total",
            "telenet_dispatch_send_duration_seconds",
            "telenet_dispatch_held_total",
            "telenet_dispatch_channel_pauses_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        for (series, value) in [
            (
                r#"telenet_dispatch_attempts_total{channel_kind="custom",outcome="sent"}"#,
                2.0,
            ),
            (
                r#"telenet_dispatch_attempts_total{channel_kind="unknown",outcome="failed"}"#,
                1.0,
            ),
            (
                r#"telenet_dispatch_send_duration_seconds_count{channel_kind="custom"}"#,
                1.0,
            ),
            ("telenet_dispatch_overdue_total", 3.0),
            (
                r#"telenet_dispatch_held_total{channel_kind="telegram",cause="rate_limit"}"#,
                2.0,
            ),
            (
                r#"telenet_dispatch_held_total{channel_kind="telegram",cause="paused"}"#,
                1.0,
            ),
            (
                r#"telenet_dispatch_channel_pauses_total{channel_kind="telegram"}"#,
                1.0,
            ),
            (
                r#"telenet_dispatch_send_duration_seconds_bucket{channel_kind="custom",le="0.025"}"#,
                1.0,
            ),
            (
                r#"telenet_dispatch_send_duration_seconds_bucket{channel_kind="custom",le="0.01"}"#,
                0.0,
            ),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
        }
    }
}
