//! Two workspaces with something in each, for the tenancy matrices
//! (`tests/tenancy.rs` over REST, `tests/tenancy_grpc.rs` over gRPC).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::flow::Gateway;
use crate::{Receiver, eventually, inbound_text};

pub const WAIT: Duration = Duration::from_secs(30);
pub const BOUNDARY: &str = "telenet-tenancy";

/// What a workspace holds for the matrix.
#[derive(Debug, Clone)]
pub struct Objects {
    pub workspace_id: String,
    pub token: String,
    pub channel_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub message_id: String,
    pub file_id: String,
    /// `/v1/downloads/{workspace_id}/{id}/{file_name}` of the file.
    pub download_path: String,
    pub user_id: String,
    /// A second API token of the member (revoked by the matrices; the
    /// member's own `token` stays valid).
    pub token_id: String,
}

impl Objects {
    /// Ids that must never appear in another workspace's answers.
    pub fn ids(&self) -> Vec<&str> {
        vec![
            &self.workspace_id,
            &self.channel_id,
            &self.conversation_id,
            &self.contact_id,
            &self.message_id,
            &self.file_id,
            &self.user_id,
            &self.token_id,
        ]
    }
}

pub async fn call(
    gateway: &Gateway,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Body>,
) -> (u16, String) {
    let mut request = gateway
        .http
        .request(method, format!("{}{path}", gateway.base))
        .bearer_auth(token);
    match body {
        Some(Body::Json(v)) => request = request.json(v),
        Some(Body::Multipart(bytes)) => {
            request = request
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(bytes.clone());
        }
        None => {}
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

pub enum Body {
    Json(Value),
    Multipart(Vec<u8>),
}

/// A small text file whose bytes (and so its id, their SHA-256) are
/// `tag`'s own.
pub fn multipart_file(tag: &str) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nfile\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"terms.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(format!("Terms and conditions of {tag}.\n").as_bytes());
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A channel, a conversation (a contact wrote in, an agent answered) and a
/// file in the workspace of `token`.
pub async fn populate(
    gateway: &Gateway,
    receiver: &Receiver,
    workspace_id: &str,
    token: &str,
    tag: &str,
) -> Objects {
    let (status, channel) = call(
        gateway,
        token,
        Method::POST,
        "/v1/channels",
        Some(&Body::Json(json!({
            "kind": "custom", "name": format!("Shop {tag}"), "outbound_url": receiver.url()
        }))),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let channel: Value = serde_json::from_str(&channel).expect("channel");
    let channel_id = channel["id"].as_str().expect("id").to_owned();
    let secret = channel["secret"].as_str().expect("secret");
    receiver.set_secret(secret).await;
    let body = inbound_text(&format!("in-{tag}"), &format!("+3460011{tag}"), "Hola").to_string();
    let key = telenet_signing::Secret::parse(secret).expect("secret");
    let now = telenet_signing::unix_now();
    let answer = gateway
        .http
        .post(channel["webhook_url"].as_str().expect("webhook url"))
        .header("content-type", "application/json")
        .header("webhook-id", format!("wh-{tag}"))
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            key.sign(&format!("wh-{tag}"), now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(answer.status(), 200);
    let conversation = eventually("the conversation", WAIT, || async {
        let (_, page) = call(gateway, token, Method::GET, "/v1/conversations", None).await;
        let page: Value = serde_json::from_str(&page).ok()?;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let conversation_id = conversation["id"].as_str().expect("id").to_owned();
    let contact_id = conversation["contact_id"]
        .as_str()
        .expect("contact id")
        .to_owned();
    let (status, message) = call(
        gateway,
        token,
        Method::POST,
        &format!("/v1/conversations/{conversation_id}/messages"),
        Some(&Body::Json(json!({"text": "Sí, la tenemos."}))),
    )
    .await;
    assert_eq!(status, 201, "{message}");
    let message: Value = serde_json::from_str(&message).expect("message");
    let message_id = message["message"]["id"].as_str().expect("id").to_owned();
    let (status, file) = call(
        gateway,
        token,
        Method::POST,
        "/v1/files",
        Some(&Body::Multipart(multipart_file(tag))),
    )
    .await;
    assert_eq!(status, 201, "{file}");
    let file: Value = serde_json::from_str(&file).expect("file");
    let file_id = file["id"].as_str().expect("id").to_owned();
    let (status, link) = call(
        gateway,
        token,
        Method::POST,
        &format!("/v1/files/{file_id}/links"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let link: Value = serde_json::from_str(&link).expect("link");
    let url = link["url"].as_str().expect("url");
    let download_path = url[url.find("/v1/downloads/").expect("a download path")..].to_owned();
    let (_, me) = call(gateway, token, Method::GET, "/v1/me", None).await;
    let me: Value = serde_json::from_str(&me).expect("me");
    let user_id = me["user_id"]
        .as_str()
        .or_else(|| me["id"].as_str())
        .expect("user id")
        .to_owned();
    let (status, spare) = call(
        gateway,
        token,
        Method::POST,
        "/v1/tokens",
        Some(&Body::Json(json!({"label": format!("spare {tag}")}))),
    )
    .await;
    assert_eq!(status, 201, "{spare}");
    let spare: Value = serde_json::from_str(&spare).expect("token");
    let token_id = spare["api_token"]["id"].as_str().expect("id").to_owned();
    Objects {
        token_id,
        workspace_id: workspace_id.to_owned(),
        token: token.to_owned(),
        channel_id,
        conversation_id,
        contact_id,
        message_id,
        file_id,
        download_path,
        user_id,
    }
}

/// The suite's seeded workspace (A) and a second one (B), each populated.
pub async fn two_workspaces(running: &telenet::Running, receiver: &Receiver) -> (Objects, Objects) {
    use telenet_proto::conversations::v1::CreateWorkspaceRequest;
    use telenet_proto::conversations::v1::members_client::MembersClient;
    let gateway = Gateway::of(running);
    let seed = running.seed.clone().expect("seed");
    let mut members = MembersClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("grpc");
    let created = members
        .create_workspace(CreateWorkspaceRequest {
            name: "Other Co".into(),
            owner_name: "Bea".into(),
            owner_email: "bea@other.example".into(),
        })
        .await
        .expect("workspace B")
        .into_inner();
    let b_workspace = created.workspace.expect("workspace").id;
    let a = populate(&gateway, receiver, &seed.workspace_id, &seed.token, "01").await;
    let b = populate(&gateway, receiver, &b_workspace, &created.token, "02").await;
    (a, b)
}
