//! The first slice end to end, through the agents' REST gateway and a custom
//! channel: webhook → conversation → reply (assigns the replier) → outbound
//! received and verified by the channel → sent → delivered via a status
//! webhook → close with a note → the next message opens a new unassigned
//! conversation; reports count it all; another workspace sees none of it.
//!
//! Run twice: on embedded defaults (one process, SQLite, in-memory bus and
//! presence) and on real PostgreSQL + RabbitMQ + Redis with every service
//! as its own suite talking over its own gRPC port.

use std::time::Duration;

use serde_json::{Value, json};
use telenet::{Config, Running, ServiceName};
use telenet_proto::conversations::v1::CreateWorkspaceRequest;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_tests::{Receiver, eventually, inbound_text, send_webhook, world};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("gateway request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

struct Deployment {
    gateway: String,
    grpc_conversations: String,
    token: String,
    stop: Vec<(Running, CancellationToken)>,
}

async fn embedded(dir: &std::path::Path) -> Deployment {
    let (running, token) = world::start(world::embedded(dir), &ServiceName::ALL).await;
    Deployment {
        gateway: format!("http://{}", running.gateway_addr.expect("gateway")),
        grpc_conversations: format!("http://{}", running.grpc_addr),
        token: running.seed.clone().expect("seed").token,
        stop: vec![(running, token)],
    }
}

/// Every service in its own suite with its own port, on real infrastructure.
async fn separate(dir: &std::path::Path) -> Deployment {
    let base = world::real(dir).await;
    let mut stop = Vec::new();
    let mut endpoints = telenet::config::Endpoints::default();
    let mut gateway = String::new();
    let mut token = String::new();
    for service in [
        ServiceName::Contacts,
        ServiceName::Ingress,
        ServiceName::Media,
        ServiceName::Reporting,
        ServiceName::Conversations,
        ServiceName::Dispatch,
        ServiceName::Gateway,
    ] {
        let mut config: Config = base.clone();
        config.endpoints = endpoints.clone();
        config.seed = service == ServiceName::Conversations;
        config.data_dir = dir.join(service.as_str());
        let (running, cancel) = world::start(config, &[service]).await;
        let addr = format!("http://{}", running.grpc_addr);
        match service {
            ServiceName::Contacts => endpoints.contacts = addr,
            ServiceName::Ingress => endpoints.ingress = addr,
            ServiceName::Media => endpoints.media = addr,
            ServiceName::Reporting => endpoints.reporting = addr,
            ServiceName::Conversations => {
                endpoints.conversations = addr;
                token = running.seed.clone().expect("seed").token;
            }
            ServiceName::Dispatch => endpoints.dispatch = addr,
            ServiceName::Gateway => {
                gateway = format!("http://{}", running.gateway_addr.expect("gateway"))
            }
        }
        stop.push((running, cancel));
    }
    Deployment {
        gateway,
        grpc_conversations: endpoints.conversations,
        token,
        stop,
    }
}

async fn slice(d: Deployment) {
    let http = reqwest::Client::new();
    let api = Api {
        http: http.clone(),
        base: d.gateway.clone(),
        token: d.token.clone(),
    };
    let receiver = Receiver::start().await;

    let (status, me) = api.get("/v1/me").await;
    assert_eq!(status, 200, "{me}");
    let my_id = me["user_id"].as_str().expect("user id").to_owned();

    // Connect a custom channel.
    let (status, channel) = api
        .post(
            "/v1/channels",
            json!({"kind": "custom", "name": "Shop", "outbound_url": receiver.url()}),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let secret = channel["secret"].as_str().expect("secret").to_owned();
    let webhook_url = channel["webhook_url"]
        .as_str()
        .expect("webhook url")
        .to_owned();
    receiver.set_secret(&secret).await;
    let (_, list) = api.get("/v1/channels").await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1);

    // A contact writes in: an open, unassigned conversation.
    let r = send_webhook(
        &http,
        &webhook_url,
        &secret,
        "wh-1",
        &inbound_text("in-1", "+34600111222", "Hola, ¿mi pedido? 📦"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let conv = eventually("an unassigned conversation", WAIT, || async {
        let (_, page) = api
            .get("/v1/conversations?status=open&assignee=unassigned")
            .await;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let conv_id = conv["id"].as_str().expect("id").to_owned();
    assert!(
        conv["assignee_user_id"].is_null() || conv["assignee_user_id"] == "",
        "{conv}"
    );
    let (status, contact) = api
        .get(&format!(
            "/v1/contacts/{}",
            conv["contact_id"].as_str().expect("contact")
        ))
        .await;
    assert_eq!(status, 200, "{contact}");
    assert_eq!(contact["identities"][0]["external_id"], "+34600111222");

    // Reply: assigns the replier; the channel receives it signed.
    let (status, sent) = api
        .post(
            &format!("/v1/conversations/{conv_id}/messages"),
            json!({"text": "¡Hola! Ya lo miro."}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["conversation"]["assignee_user_id"], my_id.as_str());
    assert_eq!(sent["message"]["status"], "pending");
    let reply_id = sent["message"]["id"].as_str().expect("id").to_owned();
    let got = eventually("the outbound message at the channel", WAIT, || async {
        receiver.messages().await.first().cloned()
    })
    .await;
    assert!(receiver.rejected.lock().await.is_empty());
    assert_eq!(got.webhook_id, reply_id);
    assert_eq!(got.body["type"], "message.outbound");
    assert_eq!(got.body["message"]["id"], reply_id.as_str());
    assert_eq!(
        got.body["message"]["recipient"]["external_id"],
        "+34600111222"
    );
    assert_eq!(got.body["message"]["text"], "¡Hola! Ya lo miro.");
    let reply_status = |want: &'static str| {
        let api = &api;
        let conv_id = conv_id.clone();
        let reply_id = reply_id.clone();
        async move {
            eventually(want, WAIT, || async {
                let (_, msgs) = api
                    .get(&format!("/v1/conversations/{conv_id}/messages"))
                    .await;
                let m = msgs["items"]
                    .as_array()?
                    .iter()
                    .find(|m| m["id"] == reply_id.as_str())?
                    .clone();
                (m["status"] == want).then_some(m)
            })
            .await
        }
    };
    let m = reply_status("sent").await;
    assert_eq!(m["external_id"], "out-1");

    // The channel reports delivery.
    let r = send_webhook(
        &http,
        &webhook_url,
        &secret,
        "wh-2",
        &json!({"type": "message.status", "status": {"message_external_id": "out-1", "state": "delivered"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    reply_status("delivered").await;

    // Close with a closing note: unassigned, out of the open queue.
    let (status, closed) = api
        .post(
            &format!("/v1/conversations/{conv_id}/close"),
            json!({"closing_note": {"category": "orders", "summary": "order located"}}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["status"], "closed");
    assert!(closed["assignee_user_id"].is_null() || closed["assignee_user_id"] == "");
    assert_eq!(closed["closing_note"]["category"], "orders");
    let (_, open) = api.get("/v1/conversations?status=open").await;
    assert_eq!(open["items"].as_array().expect("items").len(), 0);

    // The next message opens a new unassigned conversation.
    send_webhook(
        &http,
        &webhook_url,
        &secret,
        "wh-3",
        &inbound_text("in-2", "+34600111222", "Otra pregunta"),
    )
    .await;
    let next = eventually("a new conversation", WAIT, || async {
        let (_, page) = api
            .get("/v1/conversations?status=open&assignee=unassigned")
            .await;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_ne!(next["id"], conv_id.as_str());
    assert_eq!(next["contact_id"], conv["contact_id"]);

    // Reports count it: 2 opened, 1 closed, 2 in, 1 out today.
    let today = chrono_today();
    eventually("the daily report", WAIT, || async {
        let (_, rep) = api
            .get(&format!("/v1/reports/daily-volume?from={today}&to={today}"))
            .await;
        let row = rep["rows"].as_array()?.first()?.clone();
        (row["conversations_opened"] == 2
            && row["conversations_closed"] == 1
            && row["messages_in"] == 2
            && row["messages_out"] == 1)
            .then_some(())
    })
    .await;

    // Presence.
    let (status, p) = api
        .call(
            reqwest::Method::PUT,
            "/v1/me/status",
            Some(json!({"status": "away"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let (_, members) = api.get("/v1/members").await;
    assert_eq!(members["items"][0]["status"], "away");

    // Another workspace: sees nothing of the first.
    let grpc =
        telenet_kit::grpc::channel(&d.grpc_conversations, &Default::default()).expect("channel");
    let other = MembersClient::new(grpc)
        .create_workspace(CreateWorkspaceRequest {
            name: "Other".into(),
            owner_name: "Oz".into(),
            owner_email: "oz@other.test".into(),
        })
        .await
        .expect("workspace")
        .into_inner();
    let api_b = Api {
        http: http.clone(),
        base: d.gateway.clone(),
        token: other.token,
    };
    let (status, _) = api_b.get(&format!("/v1/conversations/{conv_id}")).await;
    assert_eq!(status, 404);
    let (status, _) = api_b
        .get(&format!(
            "/v1/contacts/{}",
            conv["contact_id"].as_str().expect("contact")
        ))
        .await;
    assert_eq!(status, 404);
    let (status, _) = api_b
        .post(
            &format!("/v1/conversations/{conv_id}/messages"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, page) = api_b.get("/v1/conversations").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 0);
    let (_, chans) = api_b.get("/v1/channels").await;
    assert_eq!(chans["items"].as_array().expect("items").len(), 0);
    let (status, _) = Api {
        http: http.clone(),
        base: d.gateway.clone(),
        token: "tlnt_wrong".into(),
    }
    .get("/v1/me")
    .await;
    assert_eq!(status, 401);

    for (running, token) in d.stop.into_iter().rev() {
        token.cancel();
        running.wait().await;
    }
}

fn chrono_today() -> String {
    let days = telenet_signing::unix_now().div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test]
async fn slice_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    slice(embedded(dir.path()).await).await;
}

#[tokio::test]
async fn slice_on_real_infrastructure_as_separate_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    slice(separate(dir.path()).await).await;
}
