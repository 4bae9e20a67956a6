//! The `workspaces`, `members` and `tokens` tables.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use telenet_proto::conversations::v1::AccessLevel;
use telenet_store::{StoreError, Tx, sqlx};

use super::enum_or;
use crate::domain::member::{Member, Workspace};

const MEMBER_COLUMNS: &str = "workspace_id, user_id, name, email, access_level, created_at";

fn decode_member(row: &AnyRow) -> Result<Member, sqlx::Error> {
    Ok(Member {
        user_id: row.try_get("user_id")?,
        workspace_id: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        access_level: enum_or(row.try_get("access_level")?, AccessLevel::Unspecified),
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn insert_workspace(tx: &mut Tx<'_>, w: &Workspace) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&w.id)
        .bind(&w.name)
        .bind(w.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn workspace_exists<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT id FROM workspaces WHERE id = $1")
        .bind(workspace_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Store a member. An e-mail the workspace has already is a unique
/// violation.
pub(crate) async fn insert_member(tx: &mut Tx<'_>, m: &Member) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO members ({MEMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .bind(&m.workspace_id)
    .bind(&m.user_id)
    .bind(&m.name)
    .bind(&m.email)
    .bind(i64::from(m.access_level as i32))
    .bind(m.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn find_member<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
) -> Result<Option<Member>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE workspace_id = $1 AND user_id = $2"
    ))
    .bind(workspace_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(decode_member).transpose()?)
}

/// Whether `user_id` is a member of the workspace.
pub(crate) async fn is_member<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    user_id: &str,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT user_id FROM members WHERE workspace_id = $1 AND user_id = $2")
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// The workspace's members by name.
pub(crate) async fn list_members<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
) -> Result<Vec<Member>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE workspace_id = $1 ORDER BY name, user_id"
    ))
    .bind(workspace_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(decode_member).collect::<Result<_, _>>()?)
}

/// Keep a member's token, by its hash.
pub(crate) async fn insert_token(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    user_id: &str,
    label: &str,
    token_hash: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (token_hash, workspace_id, user_id, label, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(workspace_id)
    .bind(user_id)
    .bind(label)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whose token hashes to `token_hash` (workspace and user), unless it was
/// revoked.
pub(crate) async fn token_owner<'c>(
    conn: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query(
        "SELECT workspace_id, user_id FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((
        row.try_get("workspace_id")?,
        row.try_get("user_id")?,
    )))
}

#[cfg(test)]
mod tests {
    use telenet_store::Db;
    use telenet_store::testing::Backend;

    use super::*;
    use crate::store::testing;

    telenet_store::on_both_backends!(
        workspaces_and_members_round_trip,
        an_email_is_one_member_per_workspace,
        members_are_listed_by_name,
        tokens_belong_to_their_member_until_revoked,
    );

    fn member(ws: &str, user: &str, name: &str, email: &str) -> Member {
        Member {
            user_id: user.into(),
            workspace_id: ws.into(),
            name: name.into(),
            email: email.into(),
            access_level: AccessLevel::Agent,
            created_at: 7,
        }
    }

    async fn stored(db: &Db, members: &[Member]) {
        let mut tx = db.begin().await.expect("begin");
        for m in members {
            insert_member(&mut tx, m).await.expect("insert");
        }
        db.commit(tx).await.expect("commit");
    }

    async fn workspaces_and_members_round_trip(backend: Backend) {
        let t = testing::db(backend).await;
        let ws = Workspace {
            id: "ws".into(),
            name: "Acme".into(),
            created_at: 5,
        };
        let mut tx = t.db.begin().await.expect("begin");
        insert_workspace(&mut tx, &ws).await.expect("workspace");
        t.db.commit(tx).await.expect("commit");
        assert!(workspace_exists(t.db.pool(), "ws").await.expect("exists"));
        assert!(!workspace_exists(t.db.pool(), "nope").await.expect("exists"));

        let owner = Member {
            access_level: AccessLevel::Owner,
            ..member("ws", "u1", "Olga", "olga@acme.test")
        };
        stored(&t.db, std::slice::from_ref(&owner)).await;
        assert_eq!(
            find_member(t.db.pool(), "ws", "u1").await.expect("find"),
            Some(owner)
        );
        assert!(is_member(t.db.pool(), "ws", "u1").await.expect("member"));
        assert!(!is_member(t.db.pool(), "ws", "u2").await.expect("stranger"));
        assert!(
            !is_member(t.db.pool(), "other", "u1")
                .await
                .expect("other workspace")
        );
        assert_eq!(
            find_member(t.db.pool(), "other", "u1")
                .await
                .expect("other workspace"),
            None
        );
    }

    async fn an_email_is_one_member_per_workspace(backend: Backend) {
        let t = testing::db(backend).await;
        stored(&t.db, &[member("ws", "u1", "Ari", "ari@acme.test")]).await;
        let mut tx = t.db.begin().await.expect("begin");
        let err = insert_member(&mut tx, &member("ws", "u2", "Ari 2", "ari@acme.test"))
            .await
            .expect_err("same email");
        assert!(err.is_unique_violation(), "{err}");
        drop(tx);
        stored(&t.db, &[member("other", "u3", "Ari", "ari@acme.test")]).await;
    }

    async fn members_are_listed_by_name(backend: Backend) {
        let t = testing::db(backend).await;
        stored(
            &t.db,
            &[
                member("ws", "u2", "Olga", "olga@acme.test"),
                member("ws", "u1", "Ari", "ari@acme.test"),
                member("ws", "u0", "Olga", "olga2@acme.test"),
                member("other", "u9", "Zoe", "zoe@other.test"),
            ],
        )
        .await;
        let ids: Vec<_> = list_members(t.db.pool(), "ws")
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        assert_eq!(ids, ["u1", "u0", "u2"]);
    }

    async fn tokens_belong_to_their_member_until_revoked(backend: Backend) {
        let t = testing::db(backend).await;
        let mut tx = t.db.begin().await.expect("begin");
        insert_token(&mut tx, "ws", "u1", "initial", "hash-1", 5)
            .await
            .expect("token");
        t.db.commit(tx).await.expect("commit");
        assert_eq!(
            token_owner(t.db.pool(), "hash-1").await.expect("owner"),
            Some(("ws".to_owned(), "u1".to_owned()))
        );
        assert_eq!(
            token_owner(t.db.pool(), "hash-2").await.expect("unknown"),
            None
        );
        sqlx::query("UPDATE tokens SET revoked_at = 9 WHERE token_hash = 'hash-1'")
            .execute(t.db.pool())
            .await
            .expect("revoke");
        assert_eq!(
            token_owner(t.db.pool(), "hash-1").await.expect("revoked"),
            None
        );
    }
}
