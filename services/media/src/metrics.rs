//! The media service's metrics, registered in the process's registry
//! ([`Metrics::register`]): transcode jobs (by profile and outcome, their
//! time, those waiting and running) and fetches of inbound attachments.
//! `docs/metrics.md` lists them for operators.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use telenet_kit::metrics::{Histograms, Metrics};

/// Upper bounds (seconds) of the transcode histogram: from a remux (a few
/// milliseconds) to the external encoders' default time limit (two
/// minutes).
const TRANSCODE_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn transcode_histogram() -> Histogram {
    Histogram::new(TRANSCODE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TranscodeLabels {
    profile: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

type Durations = Histograms<ProfileLabels>;

/// How one transcode job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscodeOutcome {
    /// Made by rewriting the container, without re-encoding.
    Remuxed,
    /// Made by decoding and encoding.
    Encoded,
    /// Not made; the variant records why.
    Failed,
}

impl TranscodeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            TranscodeOutcome::Remuxed => "remuxed",
            TranscodeOutcome::Encoded => "encoded",
            TranscodeOutcome::Failed => "failed",
        }
    }
}

/// Where a transcode job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscodeJobState {
    /// Waiting for a worker of the pool.
    Waiting,
    /// On a worker.
    Running,
}

impl TranscodeJobState {
    fn as_str(self) -> &'static str {
        match self {
            TranscodeJobState::Waiting => "waiting",
            TranscodeJobState::Running => "running",
        }
    }
}

/// How fetching one inbound attachment ended (this delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Stored.
    Ready,
    /// Failed for now; the message's event is retried.
    Retry,
    /// Failed for good; the attachment is reported failed.
    Failed,
}

impl FetchOutcome {
    fn as_str(self) -> &'static str {
        match self {
            FetchOutcome::Ready => "ready",
            FetchOutcome::Retry => "retry",
            FetchOutcome::Failed => "failed",
        }
    }
}

/// The media metrics of one registry. Clones share the series.
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    transcodes: Family<TranscodeLabels, Counter>,
    transcode_duration: Durations,
    transcode_jobs: Family<StateLabels, Gauge>,
    inbound_fetches: Family<OutcomeLabels, Counter>,
}

impl MediaMetrics {
    /// The media metrics in `metrics`' registry, declared there on first
    /// use (a second service instance in the process shares them).
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            transcodes: metrics.register(
                "media_transcodes",
                "Transcode jobs finished, by profile and outcome (remuxed, encoded, failed)",
                Family::default,
            ),
            transcode_duration: metrics.register(
                "media_transcode_duration_seconds",
                "Time a transcode job took on its worker: reading the source, converting, storing the parts",
                || Durations::new_with_constructor(transcode_histogram),
            ),
            transcode_jobs: metrics.register(
                "media_transcode_jobs",
                "Transcode jobs of this process, by state (waiting for a worker, running)",
                Family::default,
            ),
            inbound_fetches: metrics.register(
                "media_inbound_fetches",
                "Fetches of inbound attachments from providers, by outcome (ready, retry, failed)",
                Family::default,
            ),
        }
    }

    /// A transcode job finished on its worker after `elapsed`.
    pub fn observe_transcode(&self, profile: &str, outcome: TranscodeOutcome, elapsed: Duration) {
        self.transcodes
            .get_or_create(&TranscodeLabels {
                profile: profile.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        self.transcode_duration
            .get_or_create(&ProfileLabels {
                profile: profile.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A transcode job entered (`+1`) or left (`-1`) a state.
    pub fn add_transcode_jobs(&self, state: TranscodeJobState, delta: i64) {
        self.transcode_jobs
            .get_or_create(&StateLabels {
                state: state.as_str().to_owned(),
            })
            .inc_by(delta);
    }

    /// One fetch of an inbound attachment ended.
    pub fn count_inbound_fetch(&self, outcome: FetchOutcome) {
        self.inbound_fetches
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }
}

impl Default for MediaMetrics {
    /// Metrics recorded into a registry nobody serves.
    fn default() -> Self {
        Self::register(&Metrics::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_kit::metrics::sample;

    #[test]
    fn every_media_metric_is_declared_with_help_and_type() {
        let metrics = Metrics::new();
        let media = MediaMetrics::register(&metrics);
        media.observe_transcode(
            "audio-mp3",
            TranscodeOutcome::Encoded,
            Duration::from_millis(1),
        );
        media.add_transcode_jobs(TranscodeJobState::Running, 0);
        media.count_inbound_fetch(FetchOutcome::Ready);
        let text = metrics.encode().expect("encodes");
        for name in [
            "telenet_media_transcodes_total",
            "telenet_media_transcode_duration_seconds",
            "telenet_media_transcode_jobs",
            "telenet_media_inbound_fetches_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
    }

    #[test]
    fn recorded_values_show_up_with_their_labels() {
        let metrics = Metrics::new();
        let media = MediaMetrics::register(&metrics);
        media.observe_transcode(
            "voice-ogg-opus",
            TranscodeOutcome::Remuxed,
            Duration::from_millis(4),
        );
        media.add_transcode_jobs(TranscodeJobState::Waiting, 1);
        media.add_transcode_jobs(TranscodeJobState::Waiting, 1);
        media.add_transcode_jobs(TranscodeJobState::Waiting, -1);
        media.count_inbound_fetch(FetchOutcome::Retry);
        // A second instance in the process counts into the same series.
        MediaMetrics::register(&metrics).count_inbound_fetch(FetchOutcome::Retry);
        let text = metrics.encode().expect("encodes");
        for (series, value) in [
            (
                r#"telenet_media_transcodes_total{profile="voice-ogg-opus",outcome="remuxed"}"#,
                1.0,
            ),
            (
                r#"telenet_media_transcode_duration_seconds_bucket{profile="voice-ogg-opus",le="0.01"}"#,
                1.0,
            ),
            (r#"telenet_media_transcode_jobs{state="waiting"}"#, 1.0),
            (
                r#"telenet_media_inbound_fetches_total{outcome="retry"}"#,
                2.0,
            ),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
        }
    }
}
