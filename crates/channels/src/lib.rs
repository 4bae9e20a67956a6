//! Messaging channels, one module per provider.
//!
//! Everything that differs between providers lives here, behind one small
//! trait, [`Provider`]: how a webhook is authenticated ([`Provider::verify`])
//! and answered when it is a handshake ([`Provider::handshake`]), how it
//! reads as canonical events ([`Provider::parse`]), how a message is sent
//! ([`Provider::send`]), what the provider's statuses mean
//! ([`Provider::delivery_state`]), what a channel can carry
//! ([`Provider::capabilities`]), which settings connect one
//! ([`Provider::connect`]) and how its files are fetched
//! ([`Provider::authorize_media_fetch`]). Ingress and dispatch ask the
//! [`Registry`] for the provider of a channel's kind and never look at the
//! kind themselves.
//!
//! Also here: [`directory`], the one client of ingress's
//! `GetChannelCredentials` (with its short cache) that dispatch and media
//! use; [`http`], the HTTP exchange every send goes through; [`net`], where
//! requests to addresses others chose may go (public addresses and an
//! allow-list); and [`conformance`], the checks every provider passes.
//!
//! Adding a provider: a module (`src/<provider>/`) with a type implementing
//! [`Provider`], one line in [`Registry::builtin`], and a test
//! (`tests/<provider>.rs`) running [`conformance::run_all`] with its
//! fixture and sample payloads (kept in `tests/fixtures/<provider>/`).

pub mod config;
pub mod conformance;
pub mod custom;
pub mod directory;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod instagram;
pub mod line;
pub mod messenger;
pub mod meta;
pub mod net;
mod provider;
mod registry;
pub mod telegram;
pub mod viber;
pub mod whatsapp;

pub use directory::ChannelCredentials;
pub use provider::{
    Capabilities, Check, CredentialsError, HandshakeAnswer, Inbound, InboundEvent, MediaFetch,
    MediaRule, Overflow, Provider, RateLimit, RateScope, SendOutcome, TextLimit, TextUnit,
    VoiceNotes, Webhook, WebhookError, WebhookSetup,
};
pub use registry::Registry;

use telenet_proto::common::v1::ChannelKind;

/// `custom`, `whatsapp`, `web_widget`, …: a kind's proto name without its
/// prefix, lowercase (metrics labels, messages).
pub fn kind_name(kind: ChannelKind) -> String {
    let name = kind.as_str_name();
    name.strip_prefix("CHANNEL_KIND_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_kinds_are_named_by_their_short_name() {
        assert_eq!(kind_name(ChannelKind::Custom), "custom");
        assert_eq!(kind_name(ChannelKind::WebWidget), "web_widget");
    }
}
