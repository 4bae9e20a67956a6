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
//! Provider limits (see `telenet_channels::Capabilities`), checked before
//! each attempt and before anything is prepared or sent:
//!
//! - a text longer than the provider takes, on a provider that refuses
//!   rather than splits ([`text_refusal`]), and an attachment of a type or
//!   size the provider does not accept ([`media_refusal`]), fail the
//!   delivery at once, saying what and what the limit is;
//! - sending limits ([`limits_for`]) are counted in the shared rate-limit
//!   store (Redis for every replica, or memory) under `dispatch:{channel}`
//!   and `dispatch:{channel}:{recipient}`; with the channel's pause
//!   (`dispatch-pause:{channel}`, set for a provider's `retry_after` when
//!   it throttles, [`pause_quota`]). A message over a limit, or on a paused
//!   channel, is held for the wait without calling the provider and
//!   without counting an attempt ([`hold_for`]).
//!
//! Links: every stored attachment (voice notes, their variants' parts,
//! pictures, files) goes out with a signed download link the media service
//! makes, valid for `dispatch.download_link_ttl`: the receiver fetches it
//! from the gateway without credentials. When the installation has no
//! download links set up, the receiver gets only the `blob_id`.

use std::time::Duration;

use telenet_channels::http::sanitize;
use telenet_channels::{
    MediaRule, Overflow, RateLimit, RateScope, SendOutcome, TextLimit, TextUnit,
};
use telenet_kit::mime::essence;
use telenet_proto::common::v1::{Attachment, AttachmentKind, ChannelProvider};
use telenet_proto::dispatch::v1 as pb;
use telenet_ratelimit::{Limit, Quota};

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

/// The scope (metrics label and key prefix) of a channel's sending limits:
/// keys `dispatch:{channel}` and `dispatch:{channel}:{recipient}`.
pub const LIMIT_SCOPE: &str = "dispatch";

/// The scope of a channel's pause after its provider throttled it: key
/// `dispatch-pause:{channel}`.
pub const PAUSE_SCOPE: &str = "dispatch-pause";

/// The longest pause or hold the store can keep (a quota's interval).
const LONGEST_WAIT: Duration = Duration::from_secs(86_400);

/// A provider's name as agents know it, for reasons.
pub fn provider_label(provider: ChannelProvider) -> &'static str {
    match provider {
        ChannelProvider::WhatsappCloud
        | ChannelProvider::Whatsapp360dialog
        | ChannelProvider::WhatsappTwilio
        | ChannelProvider::WhatsappMessagebird
        | ChannelProvider::WhatsappVonage => "WhatsApp",
        ChannelProvider::Messenger => "Messenger",
        ChannelProvider::Instagram => "Instagram",
        ChannelProvider::Telegram => "Telegram",
        ChannelProvider::Line => "LINE",
        ChannelProvider::Viber => "Viber",
        _ => "the channel",
    }
}

/// What `unit` counts, spoken: `characters`, `UTF-16 code units`, `bytes`.
fn unit_name(unit: TextUnit) -> &'static str {
    match unit {
        TextUnit::Chars => "characters",
        TextUnit::Utf16 => "UTF-16 code units",
        TextUnit::Bytes => "bytes",
    }
}

/// Why `text` cannot go to `provider` as it is: longer than its `limit` on
/// a provider that refuses longer texts ("text is 5200 characters; LINE
/// takes at most 5000 per message"). `None`: it fits, the provider splits
/// it, or it states no limit.
pub fn text_refusal(
    text: &str,
    limit: Option<&TextLimit>,
    provider: ChannelProvider,
) -> Option<String> {
    let limit = limit?;
    if limit.overflow != Overflow::Refuse || limit.fits(text) {
        return None;
    }
    let unit = unit_name(limit.unit);
    Some(format!(
        "text is {} {unit}; {} takes at most {} per message",
        limit.unit.measure(text),
        provider_label(provider),
        limit.max
    ))
}

/// An attachment kind, spoken: `image`, `video`, `audio file`, `file`.
fn kind_name(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "image",
        AttachmentKind::Video => "video",
        AttachmentKind::Audio => "audio file",
        AttachmentKind::Voice => "voice note",
        AttachmentKind::Sticker => "sticker",
        AttachmentKind::File | AttachmentKind::Unspecified => "file",
    }
}

/// `n` bytes, spoken: `20 MiB`, `5.5 MiB`, `300 KiB`, `512 bytes`.
fn size_name(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    let scaled = |unit: u64, name: &str| {
        if n.is_multiple_of(unit) {
            format!("{} {name}", n / unit)
        } else {
            format!("{:.1} {name}", n as f64 / unit as f64)
        }
    };
    if n >= MIB {
        scaled(MIB, "MiB")
    } else if n >= KIB {
        scaled(KIB, "KiB")
    } else {
        format!("{n} bytes")
    }
}

/// Why one of `attachments` cannot go to `provider`, whose accepted media
/// are `rules`: a kind the rules cover whose MIME type none of its rules
/// accepts, or whose size is over all of their limits. Voice notes are
/// fitted elsewhere (see [`plan`]); kinds without rules, unknown types and
/// unknown sizes are left to the provider. `None`: all acceptable.
pub fn media_refusal(
    attachments: &[Attachment],
    rules: &[MediaRule],
    provider: ChannelProvider,
) -> Option<String> {
    let name = provider_label(provider);
    attachments.iter().find_map(|a| {
        let kind = match a.kind() {
            AttachmentKind::Voice => return None,
            AttachmentKind::Unspecified => AttachmentKind::File,
            kind => kind,
        };
        let of_kind: Vec<&MediaRule> = rules.iter().filter(|r| r.kind == kind).collect();
        if of_kind.is_empty() {
            return None;
        }
        let what = kind_name(kind);
        let mime = essence(&a.mime_type);
        let typed: Vec<&MediaRule> = of_kind
            .iter()
            .copied()
            .filter(|r| {
                mime.is_empty()
                    || r.mime_types.is_empty()
                    || r.mime_types.iter().any(|t| essence(t) == mime)
            })
            .collect();
        if typed.is_empty() {
            let mut accepted: Vec<&str> = of_kind
                .iter()
                .flat_map(|r| r.mime_types.iter().map(String::as_str))
                .collect();
            accepted.dedup();
            return Some(format!(
                "{what} of type {mime} is not accepted by {name} (it takes {})",
                accepted.join(", ")
            ));
        }
        if a.size_bytes == 0 {
            return None;
        }
        // The most generous limit among the rules that take the type.
        let largest = typed
            .iter()
            .map(|r| r.max_bytes)
            .try_fold(0u64, |most, max| max.map(|m| most.max(m)))?;
        (a.size_bytes > largest).then(|| {
            format!(
                "{what} is {} ({} bytes); {name} takes at most {} per {what}",
                size_name(a.size_bytes),
                a.size_bytes,
                size_name(largest)
            )
        })
    })
}

/// The quota of a provider's sending limit: `messages` at once, refilled
/// evenly over `per` (so at most `messages` in any `per`). `None` for a
/// limit that allows nothing sensible (no messages, no time).
pub fn quota_of(limit: &RateLimit) -> Option<Quota> {
    if limit.messages == 0 || limit.per.is_zero() {
        return None;
    }
    let interval = (limit.per / limit.messages).clamp(Duration::from_micros(1), LONGEST_WAIT);
    Quota::with_interval(interval, limit.messages).ok()
}

/// What to count before sending to `recipient` on `channel_id`: the
/// channel's pause (allowed only when it is not paused; counting it changes
/// nothing that matters), then each of the provider's `limits`, keyed
/// `dispatch:{channel}` (channel scope) or `dispatch:{channel}:{recipient}`
/// (recipient scope). A second limit of the same scope is keyed
/// `dispatch:{channel}#2…` so it never shares the first one's count.
pub fn limits_for(channel_id: &str, recipient: &str, limits: &[RateLimit]) -> Vec<(Limit, String)> {
    let mut cells: Vec<(Limit, String)> = pause_check_quota()
        .map(|quota| {
            (
                Limit {
                    scope: PAUSE_SCOPE,
                    quota,
                },
                channel_id.to_owned(),
            )
        })
        .into_iter()
        .collect();
    let (mut channel_n, mut recipient_n) = (0u32, 0u32);
    for limit in limits {
        let Some(quota) = quota_of(limit) else {
            continue;
        };
        let n = match limit.scope {
            RateScope::Channel => &mut channel_n,
            RateScope::Recipient => &mut recipient_n,
        };
        *n += 1;
        let channel = if *n == 1 {
            channel_id.to_owned()
        } else {
            format!("{channel_id}#{n}")
        };
        let id = match limit.scope {
            RateScope::Channel => channel,
            RateScope::Recipient => format!("{channel}:{recipient}"),
        };
        cells.push((
            Limit {
                scope: LIMIT_SCOPE,
                quota,
            },
            id,
        ));
    }
    cells
}

/// The quota checking a channel's pause: one request per microsecond,
/// allowed whenever no pause is set (see [`pause_quota`]).
fn pause_check_quota() -> Option<Quota> {
    Quota::with_interval(Duration::from_micros(1), 1).ok()
}

/// The quota that, counted once against a channel's pause key when no pause
/// is set, pauses it for `retry_after` (at least 1 ms, at most a day): until
/// then the pause check of [`limits_for`] refuses, saying how long is left.
pub fn pause_quota(retry_after: Duration) -> Option<Quota> {
    let wait = retry_after.clamp(Duration::from_millis(1), LONGEST_WAIT);
    Quota::with_interval(wait, 1).ok()
}

/// How long a message requested at `requested_at` (µs) waits, at `now`
/// (µs), before its next try when a limit asks it to wait `retry_after`:
/// that long, but not past its `deadline` (when it then fails), and at
/// least 1 ms.
pub fn hold_for(
    retry_after: Duration,
    requested_at: i64,
    now: i64,
    deadline: Duration,
) -> Duration {
    let left = deadline_micros(deadline)
        .saturating_sub(now.saturating_sub(requested_at))
        .max(0);
    let left = Duration::from_micros(u64::try_from(left).unwrap_or(0));
    retry_after.min(left).max(Duration::from_millis(1))
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

    fn attachment(kind: AttachmentKind, mime: &str, size: u64) -> Attachment {
        Attachment {
            kind: kind as i32,
            mime_type: mime.into(),
            size_bytes: size,
            ..Attachment::default()
        }
    }

    #[test]
    fn texts_over_a_refusing_providers_limit_are_refused_naming_the_unit() {
        let refuse = TextLimit {
            max: 5000,
            unit: TextUnit::Chars,
            overflow: Overflow::Refuse,
        };
        let long = "ä".repeat(5200);
        assert_eq!(
            text_refusal(&long, Some(&refuse), ChannelProvider::Line).as_deref(),
            Some("text is 5200 characters; LINE takes at most 5000 per message")
        );
        assert_eq!(
            text_refusal(&"ä".repeat(5000), Some(&refuse), ChannelProvider::Line),
            None
        );
        let utf16 = TextLimit {
            max: 3,
            unit: TextUnit::Utf16,
            overflow: Overflow::Refuse,
        };
        assert_eq!(
            text_refusal("a👋👋", Some(&utf16), ChannelProvider::Telegram).as_deref(),
            Some("text is 5 UTF-16 code units; Telegram takes at most 3 per message")
        );
        let bytes = TextLimit {
            max: 2,
            unit: TextUnit::Bytes,
            overflow: Overflow::Refuse,
        };
        assert_eq!(
            text_refusal("äb", Some(&bytes), ChannelProvider::WhatsappCloud).as_deref(),
            Some("text is 3 bytes; WhatsApp takes at most 2 per message")
        );
        // Providers that split, and those that state no limit, take it.
        let split = TextLimit {
            overflow: Overflow::Split,
            ..refuse
        };
        assert_eq!(
            text_refusal(&long, Some(&split), ChannelProvider::Line),
            None
        );
        assert_eq!(text_refusal(&long, None, ChannelProvider::Line), None);
    }

    #[test]
    fn attachments_the_provider_does_not_take_are_refused_naming_type_or_size() {
        let rules = vec![
            MediaRule {
                kind: AttachmentKind::Image,
                mime_types: list(&["image/jpeg", "image/png"]),
                max_bytes: Some(10 * 1024 * 1024),
            },
            MediaRule {
                kind: AttachmentKind::File,
                mime_types: Vec::new(),
                max_bytes: Some(50 * 1024 * 1024),
            },
        ];
        let line = ChannelProvider::Line;
        let png = attachment(AttachmentKind::Image, "Image/PNG", 2048);
        assert_eq!(
            media_refusal(std::slice::from_ref(&png), &rules, line),
            None
        );
        let bmp = attachment(AttachmentKind::Image, "image/bmp", 2048);
        assert_eq!(
            media_refusal(&[png.clone(), bmp], &rules, line).as_deref(),
            Some(
                "image of type image/bmp is not accepted by LINE (it takes image/jpeg, image/png)"
            )
        );
        let big = attachment(AttachmentKind::Image, "image/jpeg", 11 * 1024 * 1024 + 512);
        assert_eq!(
            media_refusal(&[big], &rules, line).as_deref(),
            Some("image is 11.0 MiB (11534848 bytes); LINE takes at most 10 MiB per image")
        );
        // Files of any type, up to their size; unspecified kinds are files.
        let pdf = attachment(
            AttachmentKind::Unspecified,
            "application/pdf",
            60 * 1024 * 1024,
        );
        assert_eq!(
            media_refusal(&[pdf], &rules, line).as_deref(),
            Some("file is 60 MiB (62914560 bytes); LINE takes at most 50 MiB per file")
        );
        // Kinds without rules, voice notes, unknown types and sizes are
        // left to the provider; no rules at all: anything.
        for ok in [
            attachment(AttachmentKind::Video, "video/x-unknown", u64::MAX),
            attachment(AttachmentKind::Voice, "audio/webm", u64::MAX),
            attachment(AttachmentKind::Image, "", 2048),
            attachment(AttachmentKind::Image, "image/png", 0),
        ] {
            assert_eq!(
                media_refusal(std::slice::from_ref(&ok), &rules, line),
                None,
                "{ok:?}"
            );
            assert_eq!(media_refusal(&[ok], &[], line), None);
        }
        // Several rules of a kind: any of them takes it.
        let mut two = rules.clone();
        two.push(MediaRule {
            kind: AttachmentKind::Image,
            mime_types: list(&["image/gif"]),
            max_bytes: None,
        });
        let gif = attachment(AttachmentKind::Image, "image/gif", u64::MAX);
        assert_eq!(media_refusal(&[gif], &two, line), None);
        assert_eq!(size_name(512), "512 bytes");
        assert_eq!(size_name(300 * 1024), "300 KiB");
    }

    fn rate(messages: u32, per: Duration, scope: RateScope) -> RateLimit {
        RateLimit {
            messages,
            per,
            scope,
        }
    }

    #[test]
    fn sending_limits_are_keyed_by_channel_and_recipient() {
        let second = Duration::from_secs(1);
        let limits = limits_for(
            "ch-1",
            "+4915550001",
            &[
                rate(30, second, RateScope::Channel),
                rate(1, second, RateScope::Recipient),
                rate(1000, Duration::from_secs(60), RateScope::Channel),
                rate(0, second, RateScope::Channel),
            ],
        );
        let keys: Vec<String> = limits
            .iter()
            .map(|(limit, id)| format!("{}:{id}", limit.scope))
            .collect();
        assert_eq!(
            keys,
            [
                "dispatch-pause:ch-1",
                "dispatch:ch-1",
                "dispatch:ch-1:+4915550001",
                "dispatch:ch-1#2",
            ]
        );
        // The pause check lets everything through while no pause is set.
        assert_eq!(limits[0].0.quota.interval(), Duration::from_micros(1));
        assert_eq!(limits[0].0.quota.burst(), 1);
        // 30 a second: 30 at once, one more every 1/30 s.
        assert_eq!(limits[1].0.quota.burst(), 30);
        assert_eq!(limits[1].0.quota.interval(), second / 30);
        assert_eq!(limits[2].0.quota.interval(), second);
        assert_eq!(limits[3].0.quota.interval(), Duration::from_millis(60));
        // Nothing the store could keep: a limit of nothing, a day and more.
        assert_eq!(quota_of(&rate(1, Duration::ZERO, RateScope::Channel)), None);
        let rare = quota_of(&rate(
            1,
            Duration::from_secs(3 * 86_400),
            RateScope::Channel,
        ));
        assert_eq!(
            rare.map(|q| q.interval()),
            Some(Duration::from_secs(86_400))
        );
        // A provider without limits: only the pause.
        assert_eq!(limits_for("ch-1", "x", &[]).len(), 1);
    }

    #[test]
    fn pauses_last_the_providers_retry_after_within_bounds() {
        let q = |d| pause_quota(d).map(|q| (q.interval(), q.burst()));
        assert_eq!(q(Duration::from_secs(3)), Some((Duration::from_secs(3), 1)));
        assert_eq!(q(Duration::ZERO), Some((Duration::from_millis(1), 1)));
        assert_eq!(
            q(Duration::from_secs(7 * 86_400)),
            Some((Duration::from_secs(86_400), 1))
        );
    }

    #[test]
    fn held_messages_wait_as_asked_but_not_past_their_deadline() {
        let deadline = Duration::from_secs(60);
        let s = 1_000_000;
        assert_eq!(
            hold_for(Duration::from_secs(2), 0, 10 * s, deadline),
            Duration::from_secs(2)
        );
        // 5 s left: waits 5 s, then fails as overdue.
        assert_eq!(
            hold_for(Duration::from_secs(30), 0, 55 * s, deadline),
            Duration::from_secs(5)
        );
        // Past it already, or asked not to wait: a moment.
        assert_eq!(
            hold_for(Duration::from_secs(30), 0, 70 * s, deadline),
            Duration::from_millis(1)
        );
        assert_eq!(
            hold_for(Duration::ZERO, 0, s, deadline),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn throttling_is_retried_and_counts_as_an_attempt() {
        let throttled = || SendOutcome::Throttled {
            reason: "http 429: too many requests".into(),
            retry_after: Duration::from_secs(3),
        };
        let retry = settle(throttled(), 1, 3);
        assert_eq!(
            (retry.state, retry.error.as_str()),
            (State::Pending, "http 429: too many requests")
        );
        let last = settle(throttled(), 3, 3);
        assert_eq!(
            (last.state, last.error.as_str()),
            (
                State::Failed,
                "gave up after 3 attempts: http 429: too many requests"
            )
        );
    }
}
