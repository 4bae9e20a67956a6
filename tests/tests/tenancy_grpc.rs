//! The tenancy matrix of the gRPC API, generated from the proto's own
//! descriptors so that a new method cannot be left out: two workspaces, A
//! and B, each with a channel, a contact, a conversation with a reply and a
//! file. Every method of every `telenet.*.v1` service is called for
//! workspace A (field `workspace_id`) naming B's objects in its id fields
//! (`conversation_id` → B's conversation, …; the acting user, such as
//! `caller_user_id`, is A's). It must answer NOT_FOUND (or PERMISSION_DENIED
//! where the refusal is about the caller's level, or UNIMPLEMENTED for a
//! method not built yet, listed as such) and carry none of B's ids; the same
//! request for workspace B must not answer NOT_FOUND, which proves the
//! request reached the object. Methods naming no object answer A without
//! any of B's ids.
//!
//! An id field the test cannot fill with one of B's objects gets a fresh
//! id (which must then be NOT_FOUND as well); the matrix prints what each
//! method answered.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MethodDescriptor, Value};
use telenet::ServiceName;
use telenet_tests::tenancy::{Objects, two_workspaces};
use telenet_tests::{Receiver, world};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Passes encoded messages through unchanged.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }
    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The value of id field `name` naming B's object (the acting user is A's);
/// whether it is a fresh id (an object B does not have).
fn id_for(name: &str, a: &Objects, b: &Objects) -> Option<(String, bool)> {
    let known = |id: &String| Some((id.clone(), false));
    match name {
        "workspace_id" => known(&a.workspace_id),
        "caller_user_id" | "author_user_id" | "sender_user_id" => known(&a.user_id),
        "conversation_id" => known(&b.conversation_id),
        "contact_id" | "primary_contact_id" | "secondary_contact_id" => known(&b.contact_id),
        "channel_id" => known(&b.channel_id),
        "message_id" | "up_to_message_id" => known(&b.message_id),
        "blob_id" => known(&b.file_id),
        "token_id" => known(&b.token_id),
        "user_id" | "assignee_user_id" | "reassign_to_user_id" => known(&b.user_id),
        name if name.ends_with("_id") && !is_external(name) => {
            // An object B does not have yet (team, snippet, token, …).
            Some((uuid::Uuid::now_v7().to_string(), true))
        }
        _ => None,
    }
}

/// Ids that are not objects of a workspace: the platform's or the
/// caller's own references.
fn is_external(name: &str) -> bool {
    name.contains("external_id")
        || matches!(
            name,
            "client_message_id" | "request_id" | "session_id" | "resume_after_event_id" | "bot_id"
        )
}

/// The request of `method` for `workspace`, naming B's objects; whether it
/// names any object at all, and whether one of them is a fresh id.
fn request(
    method: &MethodDescriptor,
    workspace: &str,
    a: &Objects,
    b: &Objects,
) -> (Bytes, bool, bool) {
    let mut message = DynamicMessage::new(method.input());
    let mut names_object = false;
    let mut fresh = false;
    for field in method.input().fields() {
        let name = field.name();
        if !matches!(field.kind(), Kind::String) {
            continue;
        }
        if name == "workspace_id" {
            message.set_field(&field, Value::String(workspace.to_owned()));
            continue;
        }
        if field.is_list() && name.ends_with("_ids") {
            let single = &name[..name.len() - 1];
            if let Some((id, new)) = id_for(single, a, b) {
                message.set_field(&field, Value::List(vec![Value::String(id)]));
                names_object = true;
                fresh |= new;
            }
            continue;
        }
        if field.is_list() {
            continue;
        }
        if let Some((id, new)) = id_for(name, a, b) {
            names_object |= !matches!(name, "caller_user_id" | "author_user_id" | "sender_user_id");
            fresh |= new;
            message.set_field(&field, Value::String(id));
        } else if matches!(name, "text" | "name" | "label" | "summary" | "external_id") {
            message.set_field(&field, Value::String("tenancy".into()));
        } else if name == "profile" {
            message.set_field(&field, Value::String("voice-ogg-opus".into()));
        }
    }
    (Bytes::from(message.encode_to_vec()), names_object, fresh)
}

/// Methods whose ids filter what the caller's own workspace holds (lists,
/// searches, reports, live streams), or that write only into the caller's
/// workspace with a reference it keeps as given: answering them for A
/// with B's ids is right as long as nothing of B comes back.
fn is_filter(method: &MethodDescriptor) -> bool {
    let name = method.name();
    name.starts_with("List")
        || name.starts_with("Search")
        || name.starts_with("Watch")
        || name.starts_with("Count")
        || name.ends_with("Report")
        || name == "GetDailyVolume"
        // Contacts keep a sender's identity as ingress gives it; the
        // channel is ingress's to check.
        || name == "UpsertByIdentity"
}

/// One call; the status code and the answer's bytes (the first message of
/// a stream).
async fn call(
    channel: &tonic::transport::Channel,
    method: &MethodDescriptor,
    body: Bytes,
) -> (Code, Bytes, String) {
    let path = http::uri::PathAndQuery::from_str(&format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .expect("path");
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let outcome = if method.is_server_streaming() {
        match grpc
            .server_streaming(tonic::Request::new(body), path, Raw)
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                // A live stream may stay silent: that is an answer too.
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Ok(Ok(Some(first))) => Ok(first),
                    Ok(Ok(None)) | Err(_) => Ok(Bytes::new()),
                    Ok(Err(status)) => Err(status),
                }
            }
            Err(status) => Err(status),
        }
    } else {
        grpc.unary(tonic::Request::new(body), path, Raw)
            .await
            .map(|r| r.into_inner())
    };
    match outcome {
        Ok(bytes) => (Code::Ok, bytes, String::new()),
        Err(status) => (status.code(), Bytes::new(), status.message().to_owned()),
    }
}

fn leaked<'a>(answer: &[u8], message: &str, b: &'a Objects, sent: &[u8]) -> Option<&'a str> {
    let contains = |hay: &[u8], id: &str| hay.windows(id.len()).any(|w| w == id.as_bytes());
    b.ids()
        .into_iter()
        .find(|id| (contains(answer, id) || message.contains(id)) && !contains(sent, id))
}

async fn matrix(config: telenet::Config) {
    let receiver = Receiver::start().await;
    let (running, token) = world::start(config, &ServiceName::ALL).await;
    let (a, b) = two_workspaces(&running, &receiver).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let pool = DescriptorPool::decode(telenet_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.full_name().starts_with("telenet.") && s.package_name().ends_with(".v1"))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    // Reads first, then changes, closes and deletions last, so a change
    // does not hide an object from a later method.
    let rank = |m: &MethodDescriptor| {
        let n = m.name();
        match () {
            _ if n.starts_with("Get") || n.starts_with("List") || n.starts_with("Search") => 0,
            _ if n.starts_with("Delete") || n.starts_with("Close") || n.starts_with("Merge") => 2,
            _ => 1,
        }
    };
    methods.sort_by_key(|m| (rank(m), m.full_name().to_owned()));
    assert!(
        methods.len() >= 100,
        "{} methods in the descriptors",
        methods.len()
    );

    let mut rows: BTreeMap<String, String> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut unimplemented = 0;
    for method in &methods {
        let name = method.full_name().to_owned();
        if method.is_client_streaming() {
            // Upload: its header names the caller's own workspace only, and
            // a file's id is the hash of the bytes the caller sent.
            rows.insert(
                name,
                "client stream: creates in the caller's workspace".into(),
            );
            continue;
        }
        let (body, names_object, fresh) = request(method, &a.workspace_id, &a, &b);
        let (code, answer, message) = call(&channel, method, body.clone()).await;
        if code == Code::Unimplemented {
            unimplemented += 1;
            rows.insert(name, "UNIMPLEMENTED".into());
            continue;
        }
        if let Some(id) = leaked(&answer, &message, &b, &body) {
            failures.push(format!(
                "{name}: A's answer ({code:?}) carries B's id {id}: {message}"
            ));
        }
        if code == Code::Internal || code == Code::Unknown {
            failures.push(format!("{name}: answered {code:?}: {message}"));
        }
        if !names_object || is_filter(method) {
            rows.insert(name, format!("A sees only A ({code:?})"));
            continue;
        }
        if !matches!(code, Code::NotFound | Code::PermissionDenied) {
            failures.push(format!(
                "{name}: A naming B's objects answered {code:?} (want NOT_FOUND): {message}"
            ));
        }
        let (control_body, _, _) = request(method, &b.workspace_id, &b, &b);
        let (control, _, control_message) = call(&channel, method, control_body).await;
        rows.insert(name.clone(), format!("A→B {code:?}, B→B {control:?}"));
        // B's file is a text file: it has no voice variant to find.
        let absent_in_b = fresh || method.name() == "GetVariant";
        if control == Code::NotFound && !absent_in_b {
            failures.push(format!(
                "{name}: B on its own objects answered NOT_FOUND, so the matrix proves nothing: {control_message}"
            ));
        } else if matches!(control, Code::Internal | Code::Unknown) {
            failures.push(format!(
                "{name}: B on its own objects answered {control:?}: {control_message}"
            ));
        }
    }
    for (method, outcome) in &rows {
        println!("{method:<70} {outcome}");
    }
    println!("{unimplemented} of {} methods unimplemented", methods.len());
    assert!(
        failures.is_empty(),
        "tenancy failures:\n{}",
        failures.join("\n")
    );
    token.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_method_keeps_workspaces_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    matrix(world::embedded(dir.path())).await;
}
