//! The operations on workspaces, their members and API tokens: each checks
//! its input with the domain and writes through the store.

use telenet_proto::conversations::v1::AccessLevel;
use telenet_store::{Db, now_micros};

use crate::domain::member::{looks_like_token, token_from, token_hash};
use crate::domain::{Member, NewMember, NewToken, NewWorkspace, Workspace};
use crate::error::{Error, require};
use crate::store::members as store;

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
        store::insert_token(
            &mut tx,
            &workspace.id,
            &owner.user_id,
            "initial",
            &token_hash(&token),
            now,
        )
        .await?;
        self.db.commit(tx).await?;
        let owner = self.get_member(&workspace.id, &owner.user_id).await?;
        Ok(CreatedWorkspace {
            workspace,
            owner,
            token,
        })
    }

    /// The member a bearer token belongs to. Unknown, revoked and orphaned
    /// tokens are refused alike.
    pub async fn authenticate(&self, token: &str) -> Result<Member, Error> {
        if !looks_like_token(token) {
            return Err(Error::Unauthenticated);
        }
        let (workspace_id, user_id) = store::token_owner(self.db.pool(), &token_hash(token))
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.get_member(&workspace_id, &user_id)
            .await
            .map_err(|e| match e {
                Error::MemberNotFound => Error::Unauthenticated,
                other => other,
            })
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

    /// Another token for a member; returned once, kept only as a hash.
    pub async fn create_token(&self, new: &NewToken) -> Result<String, Error> {
        self.get_member(&new.workspace_id, &new.user_id).await?;
        let token = new_token()?;
        let mut tx = self.db.begin().await?;
        store::insert_token(
            &mut tx,
            &new.workspace_id,
            &new.user_id,
            &new.label,
            &token_hash(&token),
            now_micros(),
        )
        .await?;
        self.db.commit(tx).await?;
        Ok(token)
    }
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
