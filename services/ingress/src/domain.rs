//! The rules of ingress, without I/O: what a channel is and which requests
//! connect one, where its webhooks are received, how a webhook refused by
//! its provider is answered, and what a webhook is de-duplicated on.
//!
//! Times are microseconds since the Unix epoch, as stored.

use http::StatusCode;
use telenet_channels::{ChannelCredentials, InboundEvent, Registry, WebhookError};
use telenet_proto::common::v1::ChannelProvider;
use telenet_proto::ingress::v1::{ChannelConfig, ChannelStatus};

use crate::Error;

/// Longest channel name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// A connected channel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Channel {
    /// Its id (UUIDv7); also the last segment of its webhook URL.
    pub id: String,
    pub workspace_id: String,
    /// Display name, 1 to 100 characters.
    pub name: String,
    pub created_at: i64,
    /// When its name, settings or status last changed (0: never since
    /// created).
    pub updated_at: i64,
    /// Whether it works, and why not.
    pub status: ChannelStatus,
    pub status_detail: String,
    /// What happened on it lately.
    pub health: Health,
    /// Its kind, provider, settings and secret, as its provider connected
    /// them.
    pub credentials: ChannelCredentials,
}

/// What happened on a channel lately (times in µs, written at most once a
/// minute each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// The last verified webhook.
    pub last_webhook_at: Option<i64>,
    /// The last refused webhook, and why.
    pub last_rejected_webhook_at: Option<i64>,
    pub last_rejection: String,
    /// The last send dispatch made on it, and its error (empty: sent).
    pub last_send_at: Option<i64>,
    pub last_send_error: String,
}

/// A request to connect a channel, checked: a workspace, a kind this build
/// has a provider for, a name. The provider checks the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChannel {
    pub workspace_id: String,
    pub name: String,
    /// The settings as requested (`kind` included).
    pub requested: ChannelCredentials,
}

impl NewChannel {
    /// The request's generic parts checked in order (workspace, kind,
    /// name); the error names the first wrong one.
    pub fn new(
        workspace_id: &str,
        name: &str,
        requested: ChannelCredentials,
        registry: &Registry,
    ) -> Result<Self, Error> {
        require("workspace_id", workspace_id)?;
        if registry.for_channel(&requested).is_none() {
            let of_kind: Vec<String> = registry
                .providers()
                .filter(|p| telenet_channels::config::kind_of(*p) == requested.kind)
                .map(telenet_channels::config::provider_name)
                .collect();
            if requested.provider == ChannelProvider::Unspecified && of_kind.len() > 1 {
                return Err(Error::InvalidArgument(format!(
                    "kind {:?} runs through one of several providers: choose {}",
                    telenet_channels::kind_name(requested.kind),
                    of_kind.join(" or ")
                )));
            }
            let asked = if requested.provider == ChannelProvider::Unspecified {
                telenet_channels::kind_name(requested.kind)
            } else {
                telenet_channels::config::provider_name(requested.provider)
            };
            return Err(Error::InvalidArgument(format!(
                "kind {asked:?} is not supported yet: {} channels can be connected",
                supported_kinds(registry)
            )));
        }
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            name: checked_name(name)?,
            requested,
        })
    }

    /// A request to connect a channel from its provider settings (the
    /// settings' case decides the provider and kind).
    pub fn from_config(
        workspace_id: &str,
        name: &str,
        config: ChannelConfig,
        registry: &Registry,
    ) -> Result<Self, Error> {
        use telenet_channels::config::{kind_of, provider_of};
        use telenet_proto::ingress::v1::channel_config::Provider as Case;
        require("workspace_id", workspace_id)?;
        let provider = provider_of(&config);
        if provider == ChannelProvider::Unspecified {
            return Err(Error::InvalidArgument(format!(
                "config: choose a provider ({} channels can be connected)",
                supported_kinds(registry)
            )));
        }
        let (outbound_url, accepted_voice_types) = match &config.provider {
            Some(Case::Custom(custom)) => (
                custom.outbound_url.clone(),
                custom.accepted_voice_types.clone(),
            ),
            _ => (String::new(), Vec::new()),
        };
        let requested = ChannelCredentials {
            kind: kind_of(provider),
            provider,
            config,
            outbound_url,
            accepted_voice_types,
            ..Default::default()
        };
        Self::new(workspace_id, name, requested, registry)
    }
}

/// A change of a channel's name and settings; `None` leaves a part as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    pub outbound_url: Option<String>,
    pub accepted_voice_types: Option<Vec<String>>,
    pub config: Option<ChannelConfig>,
}

/// A channel name: trimmed, 1 to 100 characters.
pub fn checked_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::InvalidArgument(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// `custom`, or `custom, whatsapp_cloud and telegram`.
fn supported_kinds(registry: &Registry) -> String {
    let names: Vec<String> = registry
        .providers()
        .filter(|p| *p != ChannelProvider::Unspecified)
        .map(telenet_channels::config::provider_name)
        .collect();
    match names.split_last() {
        None => "no".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// One channel of one workspace: another workspace's channel of the same
/// id is not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    pub workspace_id: String,
    pub channel_id: String,
}

impl ChannelRef {
    /// Both parts are required; the error names the first one missing.
    pub fn new(workspace_id: &str, channel_id: &str) -> Result<Self, Error> {
        require("workspace_id", workspace_id)?;
        require("channel_id", channel_id)?;
        Ok(Self {
            workspace_id: workspace_id.to_owned(),
            channel_id: channel_id.to_owned(),
        })
    }
}

/// Where providers send a channel's webhooks.
pub fn webhook_url(public_url: &str, channel_id: &str) -> String {
    format!("{}/webhooks/{channel_id}", public_url.trim_end_matches('/'))
}

/// The public URL must be absolute: every channel's webhook URL is made
/// from it.
pub fn check_public_url(public_url: &str) -> Result<(), Error> {
    url::Url::parse(public_url)
        .map(drop)
        .map_err(|_| Error::Config {
            key: "public_url",
            reason: format!("{public_url:?} is not an absolute URL"),
        })
}

/// The HTTP status a webhook its provider refused is answered with:
/// 401 when it is not authentic (the provider, or whoever sent it, must
/// not retry as is), 400 when it is authentic but malformed, 500 when our
/// own settings for the channel are broken.
pub fn refusal_status(error: &WebhookError) -> StatusCode {
    match error {
        e if e.is_unauthenticated() => StatusCode::UNAUTHORIZED,
        WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The de-duplication key of a provider's delivery: a redelivery of the
/// same webhook is recognised by it, whatever its events.
pub fn delivery_key(delivery_id: &str) -> String {
    format!("webhook:{delivery_id}")
}

/// The de-duplication key of an event: a message by its provider id, a
/// status by the message's id and the state reported (each state of a
/// message is news once).
pub fn event_key(event: &InboundEvent) -> String {
    event.identity()
}

/// The column of a channel's signing secret, as its sealed value names it.
pub const SECRET_FIELD: &str = "secret";

/// The column of a channel's provider settings, as its sealed value names it.
pub const CONFIG_FIELD: &str = "config";

/// Where a secret of a channel is kept, as its sealed value is bound to it
/// (the associated data of its encryption): the table, the channel's
/// workspace and id, and the field. A sealed secret copied to another
/// channel, workspace or field does not open.
pub fn secret_context<'a>(
    workspace_id: &'a str,
    channel_id: &'a str,
    field: &'a str,
) -> [&'a str; 4] {
    ["ingress.channels", workspace_id, channel_id, field]
}

/// How long de-duplication keys are kept, in microseconds.
pub fn key_retention_micros(hours: u64) -> i64 {
    i64::try_from(hours)
        .unwrap_or(i64::MAX)
        .saturating_mul(3_600_000_000)
}

fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::common::v1::ChannelKind;
    use telenet_proto::dispatch::v1::DeliveryState;
    use telenet_proto::events::v1::{InboundMessageReceived, InboundStatusReceived};

    fn requested(kind: ChannelKind) -> ChannelCredentials {
        ChannelCredentials {
            kind,
            ..Default::default()
        }
    }

    fn refused(result: Result<NewChannel, Error>) -> String {
        match result {
            Err(Error::InvalidArgument(reason)) => reason,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn new_channels_need_a_workspace_a_served_kind_and_a_name() {
        let registry = Registry::builtin();
        let ok = NewChannel::new("ws", "  Shop  ", requested(ChannelKind::Custom), &registry)
            .expect("valid");
        assert_eq!(ok.name, "Shop");
        assert_eq!(
            refused(NewChannel::new(
                " ",
                "Shop",
                requested(ChannelKind::Custom),
                &registry
            )),
            "workspace_id is required"
        );
        assert_eq!(
            refused(NewChannel::new(
                "ws",
                "Shop",
                requested(ChannelKind::Whatsapp),
                &registry
            )),
            "kind \"whatsapp\" runs through one of several providers: choose whatsapp_cloud or whatsapp_360dialog"
        );
        assert!(
            refused(NewChannel::new(
                "ws",
                "Shop",
                requested(ChannelKind::Wechat),
                &registry
            ))
            .starts_with("kind \"wechat\" is not supported yet: custom, whatsapp_cloud,")
        );
        for name in ["", "   ", &"x".repeat(101)] {
            assert_eq!(
                refused(NewChannel::new(
                    "ws",
                    name,
                    requested(ChannelKind::Custom),
                    &registry
                )),
                "name must be 1 to 100 characters"
            );
        }
        assert!(
            NewChannel::new(
                "ws",
                &"é".repeat(100),
                requested(ChannelKind::Custom),
                &registry
            )
            .is_ok()
        );
    }

    #[test]
    fn channel_refs_name_what_is_missing() {
        assert!(ChannelRef::new("ws", "ch").is_ok());
        let Err(Error::InvalidArgument(reason)) = ChannelRef::new("ws", "") else {
            panic!("must be refused");
        };
        assert_eq!(reason, "channel_id is required");
    }

    #[test]
    fn webhook_urls_hang_off_the_public_url() {
        assert_eq!(
            webhook_url("https://hooks.example/", "ch1"),
            "https://hooks.example/webhooks/ch1"
        );
        assert!(check_public_url("https://hooks.example").is_ok());
        assert!(matches!(
            check_public_url("hooks.example"),
            Err(Error::Config {
                key: "public_url",
                ..
            })
        ));
    }

    #[test]
    fn refusals_answer_by_whose_fault_it_is() {
        assert_eq!(
            refusal_status(&WebhookError::BadSignature("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refusal_status(&WebhookError::MissingHeader("webhook-id")),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refusal_status(&WebhookError::Stale("x".into())),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refusal_status(&WebhookError::Malformed("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refusal_status(&WebhookError::Credentials("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn events_are_keyed_by_provider_id_and_state() {
        let message = InboundEvent::Message(InboundMessageReceived {
            external_id: "m1".into(),
            ..Default::default()
        });
        assert_eq!(event_key(&message), "message:m1");
        let status = InboundEvent::Status(InboundStatusReceived {
            channel_id: "ch".into(),
            message_external_id: "x9".into(),
            state: DeliveryState::Delivered as i32,
            ..Default::default()
        });
        assert_eq!(
            event_key(&status),
            format!("status:x9:{}", DeliveryState::Delivered as i32)
        );
        assert_eq!(delivery_key("wh-1"), "webhook:wh-1");
        assert_eq!(key_retention_micros(24 * 8), 192 * 3_600_000_000);
    }
}
