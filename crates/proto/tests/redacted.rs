//! Messages that carry secrets never print them: their `Debug` says
//! whether each secret is set and shows every other field as usual, also
//! when the message sits inside another one.

use telenet_proto::ingress::v1::{
    ChannelConfig, ChannelConfigWithSecrets, ChannelCredentials, ConfigField, CreateChannelRequest,
    CreateChannelResponse, RotateChannelSecretRequest, TwilioCredentials, WhatsAppCloudConfig,
    channel_config,
};

const SECRET: &str = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";

fn shows(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains("c2VjcmV0"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    text
}

#[test]
fn the_signing_secret_is_never_printed() {
    let request = CreateChannelRequest {
        workspace_id: "ws1".into(),
        name: "Shop".into(),
        secret: SECRET.into(),
        ..Default::default()
    };
    let text = shows(&request);
    assert!(text.contains("workspace_id: \"ws1\""), "{text}");
    assert!(text.contains("name: \"Shop\""), "{text}");
    assert!(text.contains("secret: \"***\""), "{text}");
    // An empty secret shows as empty: whether one was given is visible.
    let text = shows(&CreateChannelRequest::default());
    assert!(text.contains("secret: \"\""), "{text}");

    shows(&CreateChannelResponse {
        secret: SECRET.into(),
        ..Default::default()
    });
    shows(&ChannelCredentials {
        secret: SECRET.into(),
        ..Default::default()
    });
    shows(&RotateChannelSecretRequest {
        secret: SECRET.into(),
        ..Default::default()
    });
    // Pretty-printed too.
    let pretty = format!(
        "{:#?}",
        ChannelCredentials {
            secret: SECRET.into(),
            ..Default::default()
        }
    );
    assert!(!pretty.contains(SECRET), "{pretty}");
}

#[test]
fn provider_credentials_are_never_printed_even_nested() {
    let text = shows(&TwilioCredentials {
        account_sid: "AC123".into(),
        auth_token: "hunter2".into(),
        ..Default::default()
    });
    assert!(text.contains("AC123"), "{text}");
    assert!(text.contains("auth_token: \"***\""), "{text}");

    let config = ChannelConfig {
        provider: Some(channel_config::Provider::WhatsappCloud(
            WhatsAppCloudConfig {
                access_token: "hunter2".into(),
                app_secret: SECRET.into(),
                phone_number_id: "1555".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let text = shows(&ChannelConfigWithSecrets {
        config: Some(config),
        secret: SECRET.into(),
        ..Default::default()
    });
    assert!(text.contains("1555"), "{text}");
}

#[test]
fn flags_about_secrets_are_not_secrets() {
    let field = ConfigField {
        name: "access_token".into(),
        secret: true,
        ..Default::default()
    };
    let text = format!("{field:?}");
    assert!(text.contains("secret: true"), "{text}");
}
