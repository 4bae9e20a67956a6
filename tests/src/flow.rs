//! The conversation every observability test drives through a running
//! suite: connect a custom channel, a contact writes in (signed webhook), an
//! agent replies through the gateway, the channel receives the reply.
//! Extra headers can be sent with the webhook and the reply (e.g. a
//! `traceparent` of the caller's own trace).

use std::time::Duration;

use serde_json::{Value, json};
use telenet::Running;

use crate::{Received, Receiver, eventually, inbound_text};

const WAIT: Duration = Duration::from_secs(20);

/// The agents' REST gateway of a running suite, as its seeded owner.
pub struct Gateway {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Gateway {
    /// The gateway of `running`, which must run the gateway and have seeded
    /// a workspace.
    pub fn of(running: &Running) -> Self {
        let Some(addr) = running.gateway_addr else {
            panic!("the suite runs no gateway");
        };
        let Some(seed) = &running.seed else {
            panic!("the suite seeded no workspace");
        };
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
            token: seed.token.clone(),
        }
    }

    /// One call with the owner's token and `headers`; the status and the
    /// JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => panic!("gateway request {path}: {e}"),
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// What one round trip produced.
#[derive(Debug, Clone)]
pub struct RoundTrip {
    pub channel_id: String,
    /// The channel's signing secret, as its creation answered it.
    pub secret: String,
    pub conversation_id: String,
    pub reply_id: String,
    /// The reply as the channel received it.
    pub received: Received,
}

/// Connects a custom channel delivering to `receiver`, sends a webhook
/// (with `webhook_headers`), waits for its conversation, replies (with
/// `reply_headers`) and waits until the channel received the reply.
pub async fn webhook_then_reply(
    running: &Running,
    receiver: &Receiver,
    webhook_headers: &[(&str, String)],
    reply_headers: &[(&str, String)],
) -> RoundTrip {
    let gateway = Gateway::of(running);
    let (status, channel) = gateway
        .call(
            reqwest::Method::POST,
            "/v1/channels",
            Some(json!({"kind": "custom", "name": "Shop", "outbound_url": receiver.url()})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let (Some(channel_id), Some(secret), Some(webhook_url)) = (
        channel["id"].as_str(),
        channel["secret"].as_str(),
        channel["webhook_url"].as_str(),
    ) else {
        panic!("channel without id, secret or webhook url: {channel}");
    };
    receiver.set_secret(secret).await;

    let body = inbound_text("in-1", "+34600111222", "Hola").to_string();
    let secret_key = match telenet_signing::Secret::parse(secret) {
        Ok(s) => s,
        Err(e) => panic!("channel secret: {e}"),
    };
    let timestamp = telenet_signing::unix_now();
    let signature = secret_key.sign("wh-1", timestamp, body.as_bytes());
    let mut request = gateway
        .http
        .post(webhook_url)
        .header("content-type", "application/json")
        .header("webhook-id", "wh-1")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature);
    for (name, value) in webhook_headers {
        request = request.header(*name, value);
    }
    let answer = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) => panic!("webhook: {e}"),
    };
    assert_eq!(answer.status(), 200);

    let conversation = eventually("the webhook's conversation", WAIT, || async {
        let (_, page) = gateway
            .call(reqwest::Method::GET, "/v1/conversations", None, &[])
            .await;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let Some(conversation_id) = conversation["id"].as_str().map(str::to_owned) else {
        panic!("conversation without id: {conversation}");
    };
    let (status, sent) = gateway
        .call(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conversation_id}/messages"),
            Some(json!({"text": "¡Hola!"})),
            reply_headers,
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let Some(reply_id) = sent["message"]["id"].as_str().map(str::to_owned) else {
        panic!("reply without id: {sent}");
    };
    let received = eventually("the reply at the channel", WAIT, || async {
        receiver
            .messages()
            .await
            .into_iter()
            .find(|m| m.webhook_id == reply_id)
    })
    .await;
    RoundTrip {
        channel_id: channel_id.to_owned(),
        secret: secret.to_owned(),
        conversation_id,
        reply_id,
        received,
    }
}
