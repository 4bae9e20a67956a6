//! Workspaces, members and API tokens. Tokens are random (256 bits from the
//! OS) and stored only as SHA-256 hashes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::Row;
use telenet_proto::conversations::v1 as pb;
use telenet_proto::conversations::v1::members_server::Members;
use telenet_store::sqlx;
use telenet_store::{Db, now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::{Error, require};

const TOKEN_PREFIX: &str = "tlnt_";

#[derive(Clone)]
pub struct MembersService {
    db: Db,
}

impl MembersService {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// A workspace with its first owner and a token for them.
    pub async fn create_workspace(
        &self,
        req: &pb::CreateWorkspaceRequest,
    ) -> Result<pb::CreateWorkspaceResponse, Error> {
        let name = bounded("name", &req.name, 100)?;
        let owner_name = bounded("owner_name", &req.owner_name, 100)?;
        let email = email(&req.owner_email)?;
        let ws = uuid::Uuid::now_v7().to_string();
        let user = uuid::Uuid::now_v7().to_string();
        let now = now_micros();
        let token = new_token()?;
        let mut tx = self.db.begin().await?;
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&ws)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_member(
            &mut tx,
            &ws,
            &user,
            owner_name,
            &email,
            pb::AccessLevel::Owner,
            now,
        )
        .await?;
        insert_token(&mut tx, &ws, &user, "initial", &token, now).await?;
        tx.commit().await?;
        Ok(pb::CreateWorkspaceResponse {
            workspace: Some(pb::Workspace {
                id: ws.clone(),
                name: name.to_owned(),
                created_at: Some(timestamp(now)),
            }),
            owner: Some(self.get(&ws, &user).await?),
            token,
        })
    }

    /// The member a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<pb::Member, Error> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(Error::Unauthenticated);
        }
        let row = sqlx::query(
            "SELECT workspace_id, user_id FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash(token))
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(Error::Unauthenticated)?;
        let ws: String = row.try_get("workspace_id")?;
        let user: String = row.try_get("user_id")?;
        self.get(&ws, &user).await.map_err(|e| match e {
            Error::NotFound(_) => Error::Unauthenticated,
            other => other,
        })
    }

    pub async fn create_member(&self, req: &pb::CreateMemberRequest) -> Result<pb::Member, Error> {
        require("workspace_id", &req.workspace_id)?;
        let name = bounded("name", &req.name, 100)?;
        let email = email(&req.email)?;
        let level =
            pb::AccessLevel::try_from(req.access_level).unwrap_or(pb::AccessLevel::Unspecified);
        if level == pb::AccessLevel::Unspecified {
            return Err(Error::InvalidArgument("access_level is required".into()));
        }
        self.workspace_exists(&req.workspace_id).await?;
        let user = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await?;
        insert_member(
            &mut tx,
            &req.workspace_id,
            &user,
            name,
            &email,
            level,
            now_micros(),
        )
        .await
        .map_err(|e| match e {
            Error::Store(s) if s.is_unique_violation() => {
                Error::AlreadyExists(format!("a member with email {email} already exists"))
            }
            other => other,
        })?;
        tx.commit().await?;
        self.get(&req.workspace_id, &user).await
    }

    pub async fn get(&self, workspace_id: &str, user_id: &str) -> Result<pb::Member, Error> {
        require("workspace_id", workspace_id)?;
        require("user_id", user_id)?;
        let row = sqlx::query(
            "SELECT workspace_id, user_id, name, email, access_level, created_at FROM members \
             WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| Error::NotFound("member not found".into()))?;
        member_of(&row)
    }

    pub async fn list(&self, workspace_id: &str) -> Result<Vec<pb::Member>, Error> {
        require("workspace_id", workspace_id)?;
        let rows = sqlx::query(
            "SELECT workspace_id, user_id, name, email, access_level, created_at FROM members \
             WHERE workspace_id = $1 ORDER BY name, user_id",
        )
        .bind(workspace_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(member_of).collect()
    }

    pub async fn create_token(&self, req: &pb::CreateTokenRequest) -> Result<String, Error> {
        self.get(&req.workspace_id, &req.user_id).await?;
        let token = new_token()?;
        let mut tx = self.db.begin().await?;
        insert_token(
            &mut tx,
            &req.workspace_id,
            &req.user_id,
            &req.label,
            &token,
            now_micros(),
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn workspace_exists(&self, workspace_id: &str) -> Result<(), Error> {
        sqlx::query("SELECT id FROM workspaces WHERE id = $1")
            .bind(workspace_id)
            .fetch_optional(self.db.pool())
            .await?
            .map(|_| ())
            .ok_or_else(|| Error::NotFound("workspace not found".into()))
    }
}

/// Whether `user_id` is a member of the workspace.
pub async fn is_member(db: &Db, workspace_id: &str, user_id: &str) -> Result<bool, Error> {
    Ok(
        sqlx::query("SELECT user_id FROM members WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .fetch_optional(db.pool())
            .await?
            .is_some(),
    )
}

async fn insert_member(
    tx: &mut telenet_store::Tx<'_>,
    ws: &str,
    user: &str,
    name: &str,
    email: &str,
    level: pb::AccessLevel,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO members (workspace_id, user_id, name, email, access_level, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(ws)
    .bind(user)
    .bind(name)
    .bind(email)
    .bind(i64::from(level as i32))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_token(
    tx: &mut telenet_store::Tx<'_>,
    ws: &str,
    user: &str,
    label: &str,
    token: &str,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO tokens (token_hash, workspace_id, user_id, label, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash(token))
    .bind(ws)
    .bind(user)
    .bind(label)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn member_of(row: &sqlx::any::AnyRow) -> Result<pb::Member, Error> {
    let level: i64 = row.try_get("access_level")?;
    Ok(pb::Member {
        user_id: row.try_get("user_id")?,
        workspace_id: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        access_level: i32::try_from(level).unwrap_or(0),
        created_at: Some(timestamp(row.try_get("created_at")?)),
    })
}

fn new_token() -> Result<String, Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn bounded<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, Error> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(Error::InvalidArgument(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    Ok(v)
}

fn email(value: &str) -> Result<String, Error> {
    let v = value.trim().to_lowercase();
    match v.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && v.len() <= 254 => {
            Ok(v)
        }
        _ => Err(Error::InvalidArgument(format!(
            "email {value:?} is not an e-mail address"
        ))),
    }
}

#[tonic::async_trait]
impl Members for MembersService {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::CreateWorkspaceResponse>, Status> {
        MembersService::create_workspace(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        MembersService::authenticate(self, &request.get_ref().token)
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn create_member(
        &self,
        request: Request<pb::CreateMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        MembersService::create_member(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.get_ref();
        self.get(&r.workspace_id, &r.user_id)
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        self.list(&request.get_ref().workspace_id)
            .await
            .map(|members| Response::new(pb::ListMembersResponse { members }))
            .map_err(|e| e.to_status())
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        MembersService::create_token(self, request.get_ref())
            .await
            .map(|token| Response::new(pb::CreateTokenResponse { token }))
            .map_err(|e| e.to_status())
    }
}
