//! The gateway's own metrics, registered in the process's registry
//! ([`Metrics::register`]); `docs/metrics.md` lists them for operators.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use telenet_kit::metrics::Metrics;
use telenet_presence::StatusCounts;

/// The `status` label: an effective presence status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// `telenet_presence_users`: agents by effective status across all
/// workspaces, as last counted.
#[derive(Clone, Debug)]
pub(crate) struct PresenceUsers(Family<StatusLabels, Gauge>);

impl PresenceUsers {
    /// The gauge in `metrics` (the same one for every gateway of the
    /// process).
    pub(crate) fn register(metrics: &Metrics) -> Self {
        Self(metrics.register(
            "presence_users",
            "Agents known to the presence store, by effective status",
            Family::default,
        ))
    }

    /// The counts of one poll.
    pub(crate) fn set(&self, counts: StatusCounts) {
        for (status, count) in [
            ("online", counts.online),
            ("away", counts.away),
            ("offline", counts.offline),
        ] {
            self.0
                .get_or_create(&StatusLabels { status })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_users_are_exposed_by_status() {
        let metrics = Metrics::new();
        PresenceUsers::register(&metrics).set(StatusCounts {
            online: 2,
            away: 1,
            offline: 0,
        });
        // A second registration is the same gauge.
        PresenceUsers::register(&metrics).set(StatusCounts {
            online: 3,
            away: 1,
            offline: 0,
        });
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("# HELP telenet_presence_users "), "{text}");
        assert!(
            text.contains("# TYPE telenet_presence_users gauge"),
            "{text}"
        );
        for line in [
            r#"telenet_presence_users{status="online"} 3"#,
            r#"telenet_presence_users{status="away"} 1"#,
            r#"telenet_presence_users{status="offline"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
    }
}
