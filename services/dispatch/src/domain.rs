//! The rules of dispatch, without I/O: where a delivery stands after an
//! attempt, and the form a voice note goes out in.
//!
//! Voice notes: a channel says which MIME types it takes for voice notes
//! (best first; see `telenet_channels::Capabilities::voice`). For each
//! voice attachment of an outbound message stored in the media service:
//!
//! - recorded in an accepted type: sent as it is;
//! - else the first accepted type the media service can make (a profile,
//!   e.g. `audio/ogg` → `voice-ogg-opus`): dispatch asks media for that
//!   variant (made once, cached) and sends its part(s) as the voice note;
//!   a variant still being made sends the attempt back to the bus to retry
//!   later, one that cannot be made falls back to the file as recorded;
//! - a channel that lists nothing (or nothing media can make) gets the file
//!   as recorded, as a `file` attachment.
//!
//! Deadline: a message not sent within `dispatch.pending_deadline` of its
//! reply fails ([`overdue_reason`]) and is never sent afterwards, so an
//! agent never waits on a message that stays pending forever, nor sees one
//! marked failed reach the contact later.
//!
//! Links: every stored attachment (voice notes, their variants' parts,
//! pictures, files) goes out with a signed download link the media service
//! makes, valid for `dispatch.download_link_ttl`: the receiver fetches it
//! from the gateway without credentials. When the installation has no
//! download links set up, the receiver gets only the `blob_id`.

use std::time::Duration;

use telenet_channels::SendOutcome;
use telenet_channels::http::sanitize;
use telenet_kit::mime::essence;
use telenet_proto::common::v1::{Attachment, AttachmentKind};
use telenet_proto::dispatch::v1 as pb;

use crate::media::VariantPart;

/// Where a delivery stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not sent yet; attempted again later.
    Pending,
    /// Accepted by the channel.
    Sent,
    /// Given up.
    Failed,
}

impl State {
    /// As the API shows it.
    pub fn proto(self) -> pb::DeliveryState {
        match self {
            State::Pending => pb::DeliveryState::Pending,
            State::Sent => pb::DeliveryState::Sent,
            State::Failed => pb::DeliveryState::Failed,
        }
    }

    /// Whether nothing more will be attempted.
    pub fn is_final(self) -> bool {
        self != State::Pending
    }
}

/// A delivery after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub state: State,
    /// The channel's id for the message (sent only, when it said).
    pub external_id: String,
    /// Why it is not sent (empty when sent).
    pub error: String,
}

/// Where a delivery stands after its attempt number `attempts` came to
/// `outcome`: passing trouble is retried until `max_attempts` (at least
/// one) were made, then the delivery fails, saying so. Reasons are shown
/// to agents: one line of visible text, bounded.
pub fn settle(outcome: SendOutcome, attempts: u32, max_attempts: u32) -> Settled {
    let max_attempts = max_attempts.max(1);
    let outcome = match outcome {
        // Throttling is passing trouble: retried like any other (its pause
        // is honoured by the channel's limiter before the next attempt).
        SendOutcome::Retry(reason) | SendOutcome::Throttled { reason, .. } => {
            SendOutcome::Retry(sanitize(&reason))
        }
        SendOutcome::Reject(reason) => SendOutcome::Reject(sanitize(&reason)),
        sent => sent,
    };
    let (state, external_id, error) = match outcome {
        SendOutcome::Sent { external_id } => (State::Sent, external_id, String::new()),
        SendOutcome::Reject(reason) => (State::Failed, String::new(), reason),
        SendOutcome::Retry(reason) if attempts >= max_attempts => (
            State::Failed,
            String::new(),
            format!("gave up after {attempts} attempts: {reason}"),
        ),
        SendOutcome::Retry(reason) => (State::Pending, String::new(), reason),
        SendOutcome::Throttled { reason, .. } => (State::Pending, String::new(), reason),
    };
    Settled {
        state,
        external_id,
        error,
    }
}

/// Whether a message requested at `requested_at` (µs) is past `deadline`
/// at `now` (µs).
pub fn is_overdue(requested_at: i64, now: i64, deadline: Duration) -> bool {
    now.saturating_sub(requested_at) >= deadline_micros(deadline)
}

/// `deadline` in microseconds (saturating).
pub fn deadline_micros(deadline: Duration) -> i64 {
    i64::try_from(deadline.as_micros()).unwrap_or(i64::MAX)
}

/// Why a message past its deadline failed: `not delivered within 15
/// minutes`.
pub fn overdue_reason(deadline: Duration) -> String {
    format!("not delivered within {}", spoken(deadline))
}

/// `15 minutes`, `1 hour`, `90 seconds`, `1500 milliseconds`: the largest
/// unit that says it exactly.
fn spoken(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if d.subsec_nanos() != 0 || secs == 0 {
        (d.as_millis() as u64, "millisecond")
    } else if secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Whether attempt number `attempt` may be made: at most `max_attempts`
/// (at least one) are, counting those that never reported back.
pub fn may_attempt(attempt: u32, max_attempts: u32) -> bool {
    attempt <= max_attempts.max(1)
}

/// Where a delivery stands when its `made` attempts are used up and the
/// last one never reported back (its process stopped mid-attempt): failed,
/// without another try.
pub fn unreported(made: u32) -> Settled {
    Settled {
        state: State::Failed,
        external_id: String::new(),
        error: format!("gave up after {made} attempts: the last one never reported back"),
    }
}

/// The media profile that makes a voice note of MIME type `mime` (its
/// essence: parameters ignored, case-insensitive). Profiles that split
/// audio into parts are last resorts (`audio/amr`, WeChat's form, has only
/// that one).
pub fn profile_for(mime: &str) -> Option<&'static str> {
    Some(match essence(mime).as_str() {
        "audio/ogg" | "audio/opus" => "voice-ogg-opus",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "audio-m4a-aac",
        "audio/mpeg" | "audio/mp3" => "audio-mp3",
        "audio/amr" => "voice-amr",
        "video/mp4" => "video-still-mp4",
        _ => return None,
    })
}

/// What to do with one voice attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Send as recorded, as a voice note.
    AsIs,
    /// Send the variant of this profile.
    Variant(&'static str),
    /// Send the file as recorded, as a plain file.
    AsFile,
}

/// How a voice note recorded as `recorded_mime` goes to a channel accepting
/// `accepted` (best first).
pub fn plan(recorded_mime: &str, accepted: &[String]) -> Plan {
    let recorded = essence(recorded_mime);
    if accepted.iter().any(|a| essence(a) == recorded) {
        return Plan::AsIs;
    }
    accepted
        .iter()
        .find_map(|a| profile_for(a))
        .map_or(Plan::AsFile, Plan::Variant)
}

/// The attachment as a plain file (same bytes).
pub fn as_file(mut a: Attachment) -> Attachment {
    a.set_kind(AttachmentKind::File);
    a
}

/// The attachments made of a ready variant's parts. Their names are left
/// to the media service (the id and the extension of the part's type): the
/// original's name would carry the wrong extension.
pub fn from_parts(parts: &[VariantPart]) -> Vec<Attachment> {
    parts
        .iter()
        .map(|p| Attachment {
            kind: AttachmentKind::Voice as i32,
            mime_type: p.mime_type.clone(),
            size_bytes: p.size_bytes,
            blob_id: p.blob_id.clone(),
            duration_ms: p.duration_ms,
            ..Attachment::default()
        })
        .collect()
}

/// `name` when it can name a download link (one path segment of at most
/// 128 characters, no `/`, `\\` or control characters), else empty: the
/// media service then names the file itself.
pub fn link_name(name: &str) -> &str {
    if telenet_signing::links::is_file_name(name) {
        name
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_more_attempts_than_allowed_even_when_some_never_reported() {
        assert!(may_attempt(1, 3));
        assert!(may_attempt(3, 3));
        assert!(!may_attempt(4, 3));
        // At least one attempt, whatever the setting.
        assert!(may_attempt(1, 0));
        assert!(!may_attempt(2, 0));
        let given_up = unreported(3);
        assert_eq!(
            (given_up.state, given_up.error.as_str()),
            (
                State::Failed,
                "gave up after 3 attempts: the last one never reported back"
            )
        );
    }

    #[test]
    fn passing_trouble_is_retried_until_the_last_attempt() {
        let sent = settle(
            SendOutcome::Sent {
                external_id: "x-1".into(),
            },
            1,
            3,
        );
        assert_eq!(
            (sent.state, sent.external_id.as_str(), sent.error.as_str()),
            (State::Sent, "x-1", "")
        );
        let retry = settle(SendOutcome::Retry("http 503".into()), 2, 3);
        assert_eq!(
            (retry.state, retry.error.as_str()),
            (State::Pending, "http 503")
        );
        let last = settle(SendOutcome::Retry("http 503".into()), 3, 3);
        assert_eq!(
            (last.state, last.error.as_str()),
            (State::Failed, "gave up after 3 attempts: http 503")
        );
        let rejected = settle(SendOutcome::Reject("http 400".into()), 1, 3);
        assert_eq!(rejected.state, State::Failed);
        // At least one attempt, whatever the setting.
        assert_eq!(
            settle(SendOutcome::Retry("x".into()), 1, 0).state,
            State::Failed
        );
        assert!(State::Sent.is_final() && State::Failed.is_final() && !State::Pending.is_final());
    }

    #[test]
    fn reasons_shown_to_agents_are_one_bounded_line() {
        let failed = settle(
            SendOutcome::Reject(format!("bad\r\nnews {}", "x".repeat(1000))),
            1,
            3,
        );
        assert!(failed.error.starts_with("bad news x"), "{}", failed.error);
        assert!(failed.error.chars().count() <= telenet_channels::http::REASON_CHARS);
        let retry = settle(SendOutcome::Retry("a\u{1b}[2Jb".into()), 1, 3);
        assert_eq!(retry.error, "a [2Jb");
    }

    #[test]
    fn messages_past_their_deadline_are_overdue() {
        let minute = Duration::from_secs(60);
        assert!(!is_overdue(0, 59_999_999, minute));
        assert!(is_overdue(0, 60_000_000, minute));
        assert!(!is_overdue(100, 0, minute), "a request from the future");
        assert_eq!(
            overdue_reason(Duration::from_secs(900)),
            "not delivered within 15 minutes"
        );
        assert_eq!(
            overdue_reason(Duration::from_secs(3600)),
            "not delivered within 1 hour"
        );
        assert_eq!(
            overdue_reason(Duration::from_secs(90)),
            "not delivered within 90 seconds"
        );
        assert_eq!(
            overdue_reason(Duration::from_millis(1500)),
            "not delivered within 1500 milliseconds"
        );
        assert_eq!(deadline_micros(Duration::MAX), i64::MAX);
    }

    #[test]
    fn plans_follow_the_channels_preferences() {
        let webm = "audio/webm; codecs=opus";
        assert_eq!(plan(webm, &list(&["audio/webm"])), Plan::AsIs);
        assert_eq!(plan(webm, &list(&["Audio/WebM; codecs=opus"])), Plan::AsIs);
        assert_eq!(
            plan(webm, &list(&["audio/ogg; codecs=opus", "audio/mpeg"])),
            Plan::Variant("voice-ogg-opus")
        );
        assert_eq!(
            plan(webm, &list(&["application/x-unknown", "audio/mp4"])),
            Plan::Variant("audio-m4a-aac")
        );
        assert_eq!(plan(webm, &[]), Plan::AsFile);
        assert_eq!(plan(webm, &list(&["text/plain"])), Plan::AsFile);
    }

    #[test]
    fn only_safe_names_name_links() {
        assert_eq!(link_name("note.webm"), "note.webm");
        assert_eq!(link_name("Sprachnachricht.m4a"), "Sprachnachricht.m4a");
        for bad in ["", "a/b", "..", " x", "a\\b", "tab\t"] {
            assert_eq!(link_name(bad), "", "{bad:?}");
        }
        assert_eq!(link_name(&"x".repeat(129)), "");
    }
}
