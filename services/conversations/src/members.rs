//! The operations on workspaces, their members and API tokens: each checks
//! its input with the domain and writes through the store.

use telenet_proto::conversations::v1::AccessLevel;
use telenet_proto::events::v1::{self as ev, event_envelope::Payload};
use telenet_store::cursor::{Cursor, finish_page, page_size};
use telenet_store::{Db, Tx, events, now_micros, outbox, timestamp};

use crate::domain::member::{
    looks_like_token, may_manage_tokens_of, minute_of, needs_last_used_write, token_expiry,
    token_from, token_hash, token_label, token_prefix,
};
use crate::domain::{
    ApiToken, Member, NewMember, NewToken, NewWorkspace, Page, PageRequest, SettingsChange,
    Workspace, WorkspaceSettings,
};
use crate::error::{Error, require};
use crate::store::members::{self as store, TokenFilter};
use crate::store::settings;

/// Workspaces, members and tokens.
#[derive(Clone)]
pub struct Members {
    db: Db,
}

/// A new workspace, its owner, and the owner's first token (shown once).
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedWorkspace {
    pub workspace: Workspace,
    pub owner: Member,
    pub token: String,
}

impl Members {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// A workspace with its first owner and a token for them.
    pub async fn create_workspace(&self, new: &NewWorkspace) -> Result<CreatedWorkspace, Error> {
        let checked = new.check()?;
        let now = now_micros();
        let workspace = Workspace {
            id: new_id(),
            name: checked.name.to_owned(),
            created_at: now,
        };
        let owner = Member {
            user_id: new_id(),
            workspace_id: workspace.id.clone(),
            name: checked.owner_name.to_owned(),
            email: checked.owner_email,
            access_level: AccessLevel::Owner,
            created_at: now,
        };
        let token = new_token()?;
        let mut tx = self.db.begin().await?;
        store::insert_workspace(&mut tx, &workspace).await?;
        store::insert_member(&mut tx, &owner).await?;
        let initial = api_token(&owner, "initial", &token, now, None);
        store::insert_token(&mut tx, &initial, &token_hash(&token)).await?;
        self.db.commit(tx).await?;
        let owner = self.get_member(&workspace.id, &owner.user_id).await?;
        Ok(CreatedWorkspace {
            workspace,
            owner,
            token,
        })
    }

    /// The member a bearer token belongs to, and when the token expires.
    /// Unknown, revoked and orphaned tokens are refused alike; an expired
    /// one says so. A use is recorded at minute precision, written only
    /// when the minute kept differs.
    pub async fn authenticate(&self, token: &str) -> Result<(Member, Option<i64>), Error> {
        if !looks_like_token(token) {
            return Err(Error::Unauthenticated);
        }
        let stored = store::token_by_hash(self.db.pool(), &token_hash(token))
            .await?
            .filter(|t| t.revoked_at.is_none())
            .ok_or(Error::Unauthenticated)?;
        let now = now_micros();
        if !stored.is_valid_at(now) {
            return Err(Error::TokenExpired);
        }
        let member = self
            .get_member(&stored.workspace_id, &stored.user_id)
            .await
            .map_err(|e| match e {
                Error::MemberNotFound => Error::Unauthenticated,
                other => other,
            })?;
        if needs_last_used_write(stored.last_used_at, now) {
            // Bookkeeping: a failed write does not refuse a valid token.
            if let Err(error) = store::touch_token(self.db.pool(), &stored.id, minute_of(now)).await
            {
                tracing::warn!(%error, token_id = %stored.id, "cannot record the token's last use");
            }
        }
        Ok((member, stored.expires_at))
    }

    /// Add a member to an existing workspace; an e-mail is one member.
    pub async fn create_member(&self, new: &NewMember) -> Result<Member, Error> {
        let checked = new.check()?;
        if !store::workspace_exists(self.db.pool(), &new.workspace_id).await? {
            return Err(Error::WorkspaceNotFound);
        }
        let member = Member {
            user_id: new_id(),
            workspace_id: new.workspace_id.clone(),
            name: checked.name.to_owned(),
            email: checked.email,
            access_level: checked.access_level,
            created_at: now_micros(),
        };
        let mut tx = self.db.begin().await?;
        store::insert_member(&mut tx, &member).await.map_err(|e| {
            if e.is_unique_violation() {
                Error::EmailTaken(member.email.clone())
            } else {
                e.into()
            }
        })?;
        self.db.commit(tx).await?;
        self.get_member(&member.workspace_id, &member.user_id).await
    }

    pub async fn get_member(&self, workspace_id: &str, user_id: &str) -> Result<Member, Error> {
        require("workspace_id", workspace_id)?;
        require("user_id", user_id)?;
        store::find_member(self.db.pool(), workspace_id, user_id)
            .await?
            .ok_or(Error::MemberNotFound)
    }

    /// The workspace's members by name.
    pub async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>, Error> {
        require("workspace_id", workspace_id)?;
        Ok(store::list_members(self.db.pool(), workspace_id).await?)
    }

    /// Another token for a member; its value is returned once and kept
    /// only as a hash.
    pub async fn create_token(&self, new: &NewToken) -> Result<(String, ApiToken), Error> {
        let label = token_label(&new.label)?;
        let now = now_micros();
        let expires_at = token_expiry(new.expires_at, now)?;
        let member = self.get_member(&new.workspace_id, &new.user_id).await?;
        let token = new_token()?;
        let issued = api_token(&member, label, &token, now, expires_at);
        let mut tx = self.db.begin().await?;
        store::insert_token(&mut tx, &issued, &token_hash(&token)).await?;
        self.db.commit(tx).await?;
        Ok((token, issued))
    }

    /// A workspace's tokens, newest first: an agent's own only, any for a
    /// manager or owner (optionally one member's).
    pub async fn list_tokens(&self, query: &TokenQuery) -> Result<Page<ApiToken>, Error> {
        require("workspace_id", &query.workspace_id)?;
        require("caller_user_id", &query.caller_user_id)?;
        let caller = self
            .get_member(&query.workspace_id, &query.caller_user_id)
            .await?;
        let user_id = match (caller.access_level, query.user_id.as_str()) {
            (AccessLevel::Owner | AccessLevel::Manager, "") => None,
            (AccessLevel::Owner | AccessLevel::Manager, user) => Some(user),
            (_, "") => Some(caller.user_id.as_str()),
            (_, user) if user == caller.user_id => Some(user),
            _ => return Err(Error::NotAllowed("agents may list only their own tokens")),
        };
        let size = page_size(query.page.size);
        let after = Cursor::decode(&query.page.token).map_err(Error::InvalidArgument)?;
        let filter = TokenFilter {
            user_id,
            include_revoked: query.include_revoked,
        };
        let mut items = store::list_tokens(
            self.db.pool(),
            &query.workspace_id,
            &filter,
            after.as_ref(),
            size + 1,
        )
        .await?;
        let next = finish_page(&mut items, size, |last| Cursor {
            key: last.created_at,
            id: last.id.clone(),
        });
        Ok(Page { items, next })
    }

    /// Revoke one token: Authenticate refuses it from now on, and every
    /// gateway forgets it (`member.token_revoked`, written with the change).
    /// Revoking a revoked token changes nothing and answers it as it is.
    pub async fn revoke_token(
        &self,
        workspace_id: &str,
        token_id: &str,
        caller_user_id: &str,
    ) -> Result<ApiToken, Error> {
        require("workspace_id", workspace_id)?;
        require("token_id", token_id)?;
        require("caller_user_id", caller_user_id)?;
        let caller = self.get_member(workspace_id, caller_user_id).await?;
        let (token, hash) = store::find_token(self.db.pool(), workspace_id, token_id)
            .await?
            .ok_or(Error::TokenNotFound)?;
        // A holder who is no longer a member: only managers and owners.
        let allowed = match store::find_member(self.db.pool(), workspace_id, &token.user_id).await?
        {
            Some(holder) => may_manage_tokens_of(&caller, &holder),
            None => caller.access_level == AccessLevel::Owner,
        };
        if !allowed {
            return Err(Error::NotAllowed(
                "only the token's member, an owner, or a manager for an agent may revoke it",
            ));
        }
        if token.revoked_at.is_some() {
            return Ok(token);
        }
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        if store::revoke_token(&mut tx, workspace_id, token_id, now).await? {
            token_revoked(&mut tx, &token, &hash, now).await?;
        }
        self.db.commit(tx).await?;
        let (token, _) = store::find_token(self.db.pool(), workspace_id, token_id)
            .await?
            .ok_or(Error::TokenNotFound)?;
        Ok(token)
    }
}

impl Members {
    /// The workspace's settings (the defaults until an owner changes them).
    pub async fn get_settings(&self, workspace_id: &str) -> Result<WorkspaceSettings, Error> {
        require("workspace_id", workspace_id)?;
        if !store::workspace_exists(self.db.pool(), workspace_id).await? {
            return Err(Error::WorkspaceNotFound);
        }
        Ok(settings::settings(self.db.pool(), workspace_id).await?)
    }

    /// Change some settings: owners only. Unset parts are kept; a bad time
    /// zone or language changes nothing and is named in the error.
    pub async fn update_settings(
        &self,
        workspace_id: &str,
        caller_user_id: &str,
        change: &SettingsChange,
    ) -> Result<WorkspaceSettings, Error> {
        require("caller_user_id", caller_user_id)?;
        let current = self.get_settings(workspace_id).await?;
        let caller = self.get_member(workspace_id, caller_user_id).await?;
        if caller.access_level != AccessLevel::Owner {
            return Err(Error::NotAllowed(
                "only owners may change the workspace's settings",
            ));
        }
        let next = current.changed(change, caller_user_id, now_micros())?;
        let mut tx = self.db.begin().await?;
        settings::put_settings(&mut tx, &next).await?;
        self.db.commit(tx).await?;
        Ok(next)
    }
}

/// Which tokens ListTokens shows, as the caller asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenQuery {
    pub workspace_id: String,
    pub caller_user_id: String,
    /// Only this member's; empty for all the caller may see.
    pub user_id: String,
    pub include_revoked: bool,
    pub page: PageRequest,
}

/// A new token of `member` as it is kept (its value only hashed, apart).
fn api_token(
    member: &Member,
    label: &str,
    token: &str,
    now: i64,
    expires_at: Option<i64>,
) -> ApiToken {
    ApiToken {
        id: new_id(),
        workspace_id: member.workspace_id.clone(),
        user_id: member.user_id.clone(),
        label: label.to_owned(),
        prefix: token_prefix(token),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        expires_at,
    }
}

/// `member.token_revoked`, into the outbox of the revoking transaction.
async fn token_revoked(
    tx: &mut Tx<'_>,
    token: &ApiToken,
    hash: &str,
    at: i64,
) -> Result<(), Error> {
    let payload = Payload::TokenRevoked(ev::TokenRevoked {
        token_id: token.id.clone(),
        user_id: token.user_id.clone(),
        token_hash: hash.to_owned(),
        revoked_at: Some(timestamp(at)),
    });
    let event = events::to_bus(&events::envelope(&token.workspace_id, payload, None));
    outbox::enqueue(tx, &[event]).await?;
    Ok(())
}

/// A token of 256 bits from the operating system.
fn new_token() -> Result<String, Error> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(Error::NoRandomness)?;
    Ok(token_from(random))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
