//! A channel's provider settings (`telenet.ingress.v1.ChannelConfig`):
//! which provider and kind a settings case means, and where the provider's
//! API is reached.

use telenet_proto::common::v1::{ChannelKind, ChannelProvider};
use telenet_proto::ingress::v1::ChannelConfig;
use telenet_proto::ingress::v1::channel_config::Provider as Case;

use crate::{ChannelCredentials, CredentialsError};

/// The provider a settings case means (`Unspecified` when none is set, or
/// for cases that name several providers by a field of their own: SMS,
/// e-mail).
pub fn provider_of(config: &ChannelConfig) -> ChannelProvider {
    use ChannelProvider as P;
    match &config.provider {
        None => P::Unspecified,
        Some(Case::WhatsappCloud(_)) => P::WhatsappCloud,
        Some(Case::Whatsapp360dialog(_)) => P::Whatsapp360dialog,
        Some(Case::WhatsappTwilio(_)) => P::WhatsappTwilio,
        Some(Case::WhatsappMessagebird(_)) => P::WhatsappMessagebird,
        Some(Case::WhatsappVonage(_)) => P::WhatsappVonage,
        Some(Case::Messenger(_)) => P::Messenger,
        Some(Case::Instagram(_)) => P::Instagram,
        Some(Case::Telegram(_)) => P::Telegram,
        Some(Case::Line(_)) => P::Line,
        Some(Case::Viber(_)) => P::Viber,
        Some(Case::Sms(sms)) => {
            use telenet_proto::ingress::v1::sms_config::Provider as Sms;
            match &sms.provider {
                Some(Sms::Twilio(_)) => P::SmsTwilio,
                Some(Sms::Messagebird(_)) => P::SmsMessagebird,
                Some(Sms::Vonage(_)) => P::SmsVonage,
                None => P::Unspecified,
            }
        }
        Some(Case::Email(email)) => {
            use telenet_proto::ingress::v1::email_config::Provider as Mail;
            match &email.provider {
                Some(Mail::ImapSmtp(_)) => P::EmailImapSmtp,
                Some(Mail::Gmail(_)) => P::EmailGmail,
                None => P::Unspecified,
            }
        }
        Some(Case::WebWidget(_)) => P::WebWidget,
        Some(Case::Wechat(_)) => P::Wechat,
        Some(Case::Twitter(_)) => P::Twitter,
        Some(Case::Custom(_)) => P::Custom,
    }
}

/// The kind of channel a provider serves.
pub fn kind_of(provider: ChannelProvider) -> ChannelKind {
    use ChannelProvider as P;
    match provider {
        P::Unspecified => ChannelKind::Unspecified,
        P::Custom => ChannelKind::Custom,
        P::WhatsappCloud
        | P::Whatsapp360dialog
        | P::WhatsappTwilio
        | P::WhatsappMessagebird
        | P::WhatsappVonage => ChannelKind::Whatsapp,
        P::Messenger => ChannelKind::Messenger,
        P::Instagram => ChannelKind::Instagram,
        P::Telegram => ChannelKind::Telegram,
        P::Line => ChannelKind::Line,
        P::Viber => ChannelKind::Viber,
        P::SmsTwilio | P::SmsMessagebird | P::SmsVonage => ChannelKind::Sms,
        P::EmailImapSmtp | P::EmailGmail => ChannelKind::Email,
        P::WebWidget => ChannelKind::WebWidget,
        P::Wechat => ChannelKind::Wechat,
        P::Twitter => ChannelKind::Twitter,
    }
}

/// `whatsapp_cloud`, `telegram`, …: a provider's proto name without its
/// prefix, lowercase (the `kind` of `POST /v1/channels`, metrics labels).
pub fn provider_name(provider: ChannelProvider) -> String {
    let name = provider.as_str_name();
    name.strip_prefix("CHANNEL_PROVIDER_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// The provider named `name` (as [`provider_name`] writes it).
pub fn provider_named(name: &str) -> Option<ChannelProvider> {
    ChannelProvider::from_str_name(&format!("CHANNEL_PROVIDER_{}", name.to_ascii_uppercase()))
        .filter(|p| *p != ChannelProvider::Unspecified)
}

/// The base URL of `channel`'s provider API: its `api_base_url` setting
/// when set, else `default` (the provider's public host); never with a
/// trailing `/`.
pub fn api_base(channel: &ChannelCredentials, default: &str) -> String {
    let set = channel.config.api_base_url.trim();
    let base = if set.is_empty() { default } else { set };
    base.trim_end_matches('/').to_owned()
}

/// Check an `api_base_url` setting: empty, or an absolute `https` URL
/// (`http` only on a loopback address, for local emulators and proxies)
/// without query or fragment.
pub fn check_api_base_url(value: &str) -> Result<(), CredentialsError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(());
    }
    let invalid = |why: &str| CredentialsError::Invalid(format!("api_base_url: {why}"));
    let url = url::Url::parse(value).map_err(|e| invalid(&format!("not an absolute URL ({e})")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if url.username() != "" || url.password().is_some() {
        return Err(invalid("must not carry user information"));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(invalid("has no host")),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(invalid("must be https (http only on loopback)")),
        other => Err(invalid(&format!("scheme {other:?} is not https"))),
    }
}

/// A required setting: trimmed, or an error naming it.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, CredentialsError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CredentialsError::Invalid(format!("{field}: required")));
    }
    Ok(value)
}

/// A random token of `len` characters from `A-Za-z0-9` (verify tokens,
/// Telegram's secret token, 360dialog's header secret).
pub fn random_token(len: usize) -> Result<String, CredentialsError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes)
            .map_err(|e| CredentialsError::Unavailable(format!("no randomness: {e}")))?;
        // 62 symbols: 256 % 62 = 8, so values ≥ 248 are drawn again
        // (no symbol is likelier than another).
        for b in bytes.into_iter().filter(|b| *b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telenet_proto::ingress::v1::TelegramConfig;

    #[test]
    fn every_provider_names_one_kind_and_round_trips_its_name() {
        for value in 1..=19 {
            let provider = ChannelProvider::try_from(value).expect("a provider");
            assert_ne!(kind_of(provider), ChannelKind::Unspecified, "{provider:?}");
            assert_eq!(provider_named(&provider_name(provider)), Some(provider));
        }
        assert_eq!(
            provider_named("whatsapp_360dialog"),
            Some(ChannelProvider::Whatsapp360dialog)
        );
        assert_eq!(provider_named("unspecified"), None);
        assert_eq!(provider_named("fax"), None);
    }

    #[test]
    fn a_settings_case_names_its_provider() {
        let config = ChannelConfig {
            provider: Some(Case::Telegram(TelegramConfig::default())),
            ..Default::default()
        };
        assert_eq!(provider_of(&config), ChannelProvider::Telegram);
        assert_eq!(
            provider_of(&ChannelConfig::default()),
            ChannelProvider::Unspecified
        );
    }

    #[test]
    fn api_base_urls_are_https_except_on_loopback() {
        assert!(check_api_base_url("").is_ok());
        assert!(check_api_base_url("https://graph.facebook.com").is_ok());
        assert!(check_api_base_url("http://127.0.0.1:8080/prefix").is_ok());
        assert!(check_api_base_url("http://localhost:1").is_ok());
        for bad in [
            "http://example.com",
            "ftp://x",
            "nope",
            "https://x/?a=1",
            "https://u:p@x",
        ] {
            let e = check_api_base_url(bad).expect_err(bad).to_string();
            assert!(e.starts_with("api_base_url: "), "{e}");
        }
        let channel = ChannelCredentials {
            config: ChannelConfig {
                api_base_url: "http://127.0.0.1:9/".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            api_base(&channel, "https://api.telegram.org"),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            api_base(&ChannelCredentials::default(), "https://api.telegram.org"),
            "https://api.telegram.org"
        );
    }

    #[test]
    fn random_tokens_are_alphanumeric_and_differ() {
        let a = random_token(32).expect("randomness");
        let b = random_token(32).expect("randomness");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}

/// Every secret field of `config` (the fields its proto marks *Secret*),
/// by name, to read or replace.
pub fn secrets_mut(config: &mut ChannelConfig) -> Vec<(&'static str, &mut String)> {
    use telenet_proto::ingress::v1::{
        MessageBirdCredentials, TwilioCredentials, VonageCredentials, email_config, sms_config,
    };
    fn twilio(c: &mut Option<TwilioCredentials>) -> Vec<(&'static str, &mut String)> {
        c.as_mut()
            .map(|c| vec![("auth_token", &mut c.auth_token)])
            .unwrap_or_default()
    }
    fn bird(c: &mut Option<MessageBirdCredentials>) -> Vec<(&'static str, &mut String)> {
        c.as_mut()
            .map(|c| {
                vec![
                    ("access_key", &mut c.access_key),
                    ("signing_key", &mut c.signing_key),
                ]
            })
            .unwrap_or_default()
    }
    fn vonage(c: &mut Option<VonageCredentials>) -> Vec<(&'static str, &mut String)> {
        c.as_mut()
            .map(|c| {
                vec![
                    ("api_secret", &mut c.api_secret),
                    ("private_key", &mut c.private_key),
                    ("signature_secret", &mut c.signature_secret),
                ]
            })
            .unwrap_or_default()
    }
    match config.provider.as_mut() {
        None | Some(Case::Custom(_)) => Vec::new(),
        Some(Case::WhatsappCloud(c)) => vec![
            ("access_token", &mut c.access_token),
            ("app_secret", &mut c.app_secret),
        ],
        Some(Case::Whatsapp360dialog(c)) => vec![
            ("api_key", &mut c.api_key),
            ("webhook_header_secret", &mut c.webhook_header_secret),
        ],
        Some(Case::WhatsappTwilio(c)) => twilio(&mut c.credentials),
        Some(Case::WhatsappMessagebird(c)) => bird(&mut c.credentials),
        Some(Case::WhatsappVonage(c)) => vonage(&mut c.credentials),
        Some(Case::Messenger(c)) => vec![
            ("page_access_token", &mut c.page_access_token),
            ("app_secret", &mut c.app_secret),
        ],
        Some(Case::Instagram(c)) => vec![
            ("access_token", &mut c.access_token),
            ("app_secret", &mut c.app_secret),
        ],
        Some(Case::Telegram(c)) => vec![
            ("bot_token", &mut c.bot_token),
            ("secret_token", &mut c.secret_token),
        ],
        Some(Case::Line(c)) => vec![
            ("channel_secret", &mut c.channel_secret),
            ("channel_access_token", &mut c.channel_access_token),
        ],
        Some(Case::Viber(c)) => vec![("auth_token", &mut c.auth_token)],
        Some(Case::Sms(c)) => match c.provider.as_mut() {
            Some(sms_config::Provider::Twilio(t)) => twilio(&mut t.credentials),
            Some(sms_config::Provider::Messagebird(b)) => bird(&mut b.credentials),
            Some(sms_config::Provider::Vonage(v)) => vonage(&mut v.credentials),
            None => Vec::new(),
        },
        Some(Case::Email(c)) => match c.provider.as_mut() {
            Some(email_config::Provider::ImapSmtp(m)) => vec![
                ("imap_password", &mut m.imap_password),
                ("smtp_password", &mut m.smtp_password),
            ],
            Some(email_config::Provider::Gmail(g)) => vec![("refresh_token", &mut g.refresh_token)],
            None => Vec::new(),
        },
        Some(Case::WebWidget(c)) => vec![("identity_secret", &mut c.identity_secret)],
        Some(Case::Wechat(c)) => vec![
            ("app_secret", &mut c.app_secret),
            ("encoding_aes_key", &mut c.encoding_aes_key),
        ],
        Some(Case::Twitter(c)) => vec![
            ("consumer_secret", &mut c.consumer_secret),
            ("access_token", &mut c.access_token),
            ("access_token_secret", &mut c.access_token_secret),
        ],
    }
}

/// `config` with its secrets blanked, and the names of those that were
/// set (what reads show: ChannelDetails' `secrets_set`).
pub fn redacted(config: &ChannelConfig) -> (ChannelConfig, Vec<String>) {
    let mut shown = config.clone();
    let mut set = Vec::new();
    for (name, value) in secrets_mut(&mut shown) {
        if !value.is_empty() {
            set.push(name.to_owned());
        }
        value.clear();
    }
    (shown, set)
}

/// `update` with every secret it leaves empty taken from `stored` (an
/// update that leaves a secret empty keeps it). Errors when the update
/// names another provider than the stored one.
pub fn keep_secrets(
    mut update: ChannelConfig,
    stored: &ChannelConfig,
) -> Result<ChannelConfig, CredentialsError> {
    if provider_of(&update) != provider_of(stored) {
        return Err(CredentialsError::Invalid(format!(
            "config: the provider cannot change (the channel is {}; connect a new channel for {})",
            provider_name(provider_of(stored)),
            provider_name(provider_of(&update)),
        )));
    }
    let mut stored = stored.clone();
    let kept: std::collections::HashMap<&str, String> = secrets_mut(&mut stored)
        .into_iter()
        .map(|(name, value)| (name, std::mem::take(value)))
        .collect();
    for (name, value) in secrets_mut(&mut update) {
        if value.is_empty()
            && let Some(old) = kept.get(name)
        {
            value.clone_from(old);
        }
    }
    Ok(update)
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use telenet_proto::ingress::v1::{LineConfig, TelegramConfig};

    fn telegram(token: &str, secret: &str) -> ChannelConfig {
        ChannelConfig {
            provider: Some(Case::Telegram(TelegramConfig {
                bot_token: token.into(),
                secret_token: secret.into(),
                bot_username: "shop_bot".into(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn reads_blank_secrets_and_name_those_set() {
        let (shown, set) = redacted(&telegram("123:abc", ""));
        assert_eq!(shown, telegram("", ""));
        assert_eq!(set, ["bot_token"]);
    }

    #[test]
    fn updates_keep_the_secrets_they_leave_empty() {
        let stored = telegram("123:abc", "s3cret");
        let kept = keep_secrets(telegram("", "new"), &stored).expect("same provider");
        assert_eq!(kept, telegram("123:abc", "new"));
        let other = ChannelConfig {
            provider: Some(Case::Line(LineConfig::default())),
            ..Default::default()
        };
        let e = keep_secrets(other, &stored).expect_err("another provider");
        assert!(
            e.to_string()
                .starts_with("config: the provider cannot change"),
            "{e}"
        );
    }
}
