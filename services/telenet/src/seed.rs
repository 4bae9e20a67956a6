//! The dev server's seeded workspace: on first start, a workspace with an
//! owner and a token, created through the Members gRPC API like any client
//! would, and remembered in the data directory (readable by the owner only)
//! so every later start prints the same token.

use std::net::SocketAddr;

use anyhow::Context as _;
use telenet_kit::metrics::Metrics;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::conversations::v1::{AuthenticateRequest, CreateWorkspaceRequest};

use crate::config::Config;

/// The seeded workspace of a dev server.
#[derive(Debug, Clone)]
pub struct Seed {
    pub workspace_id: String,
    pub user_id: String,
    pub token: String,
}

/// The seeded workspace: the remembered one while its token still works
/// (the database may have been reset), else a new one.
pub async fn seed_workspace(
    config: &Config,
    grpc_addr: SocketAddr,
    metrics: &Metrics,
    tls: Option<&telenet_kit::tls::Tls>,
) -> anyhow::Result<Seed> {
    let channel = telenet_kit::grpc::client_with(
        &format!("http://{grpc_addr}"),
        &config.grpc_client,
        metrics,
        "telenet",
        tls,
    )?;
    let mut members = MembersClient::new(channel);
    let path = config.data_dir.join("dev-seed.json");
    if let Some(seed) = read_seed(&path)? {
        let still_valid = members
            .authenticate(AuthenticateRequest {
                token: seed.token.clone(),
            })
            .await
            .is_ok();
        if still_valid {
            return Ok(seed);
        }
    }
    let created = members
        .create_workspace(CreateWorkspaceRequest {
            name: "My workspace".into(),
            owner_name: "Owner".into(),
            owner_email: "owner@example.com".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("seeding the dev workspace: {}", s.message()))?
        .into_inner();
    let seed = Seed {
        workspace_id: created.workspace.map(|w| w.id).unwrap_or_default(),
        user_id: created.owner.map(|o| o.user_id).unwrap_or_default(),
        token: created.token,
    };
    let body = serde_json::json!({
        "workspace_id": seed.workspace_id,
        "user_id": seed.user_id,
        "token": seed.token,
    });
    telenet_kit::fs::write_private(&path, body.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(seed)
}

fn read_seed(path: &std::path::Path) -> anyhow::Result<Option<Seed>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Ok(Some(Seed {
        workspace_id: field("workspace_id"),
        user_id: field("user_id"),
        token: field("token"),
    }))
}
