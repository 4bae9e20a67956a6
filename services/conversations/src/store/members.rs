//! The `workspaces`, `members` and `tokens` tables.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use telenet_proto::conversations::v1::AccessLevel;
use telenet_store::{StoreError, Tx, sqlx};

use super::enum_or;
use telenet_store::cursor::Cursor;

use crate::domain::member::{ApiToken, Member, Workspace};

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

const TOKEN_COLUMNS: &str = "id, workspace_id, user_id, label, prefix, created_at, \
     last_used_at, revoked_at, expires_at";

fn decode_token(row: &AnyRow) -> Result<ApiToken, sqlx::Error> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        user_id: row.try_get("user_id")?,
        label: row.try_get("label")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// Keep a member's token, by its hash (the value itself is never stored).
pub(crate) async fn insert_token(
    tx: &mut Tx<'_>,
    token: &ApiToken,
    token_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO tokens (token_hash, {TOKEN_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(token_hash)
    .bind(&token.id)
    .bind(&token.workspace_id)
    .bind(&token.user_id)
    .bind(&token.label)
    .bind(&token.prefix)
    .bind(token.created_at)
    .bind(token.last_used_at)
    .bind(token.revoked_at)
    .bind(token.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The token that hashes to `token_hash`, revoked or expired ones included
/// (the caller tells them apart).
pub(crate) async fn token_by_hash<'c>(
    conn: impl Executor<'c, Database = Any>,
    token_hash: &str,
) -> Result<Option<ApiToken>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1"
    ))
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(decode_token).transpose()?)
}

/// One token of the workspace and its hash.
pub(crate) async fn find_token<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    id: &str,
) -> Result<Option<(ApiToken, String)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT token_hash, {TOKEN_COLUMNS} FROM tokens WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((decode_token(&row)?, row.try_get("token_hash")?)))
}

/// Which of a workspace's tokens to list.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenFilter<'a> {
    /// Only this member's.
    pub user_id: Option<&'a str>,
    pub include_revoked: bool,
}

/// A workspace's tokens, newest first, after `after` (keyset paging on
/// creation time and id).
pub(crate) async fn list_tokens<'c>(
    conn: impl Executor<'c, Database = Any>,
    workspace_id: &str,
    filter: &TokenFilter<'_>,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<ApiToken>, StoreError> {
    let mut sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE workspace_id = $1");
    let mut n = 1;
    if filter.user_id.is_some() {
        n += 1;
        sql.push_str(&format!(" AND user_id = ${n}"));
    }
    if !filter.include_revoked {
        sql.push_str(" AND revoked_at IS NULL");
    }
    if after.is_some() {
        sql.push_str(&format!(
            " AND (created_at < ${a} OR (created_at = ${a} AND id < ${b}))",
            a = n + 1,
            b = n + 2
        ));
        n += 2;
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${}",
        n + 1
    ));
    let mut query = sqlx::query(&sql).bind(workspace_id);
    if let Some(user_id) = filter.user_id {
        query = query.bind(user_id);
    }
    if let Some(after) = after {
        query = query.bind(after.key).bind(&after.id);
    }
    let rows = query.bind(limit).fetch_all(conn).await?;
    Ok(rows.iter().map(decode_token).collect::<Result<_, _>>()?)
}

/// Revoke a token of the workspace at `at`; false when it was revoked
/// already (or is not the workspace's).
pub(crate) async fn revoke_token(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    id: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE tokens SET revoked_at = $1 \
         WHERE workspace_id = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(at)
    .bind(workspace_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Record a use of the token in `minute`; a later minute never goes back.
pub(crate) async fn touch_token<'c>(
    conn: impl Executor<'c, Database = Any>,
    id: &str,
    minute: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tokens SET last_used_at = $1 \
         WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
    )
    .bind(minute)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
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
        tokens_are_listed_newest_first_in_pages,
        last_use_only_moves_forward,
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

    fn token(ws: &str, user: &str, id: &str, created_at: i64) -> ApiToken {
        ApiToken {
            id: id.into(),
            workspace_id: ws.into(),
            user_id: user.into(),
            label: format!("label {id}"),
            prefix: "tlnt_abcdefg".into(),
            created_at,
            last_used_at: None,
            revoked_at: None,
            expires_at: None,
        }
    }

    async fn stored_tokens(db: &Db, tokens: &[ApiToken]) {
        let mut tx = db.begin().await.expect("begin");
        for t in tokens {
            insert_token(&mut tx, t, &format!("hash-{}", t.id))
                .await
                .expect("token");
        }
        db.commit(tx).await.expect("commit");
    }

    async fn tokens_belong_to_their_member_until_revoked(backend: Backend) {
        let t = testing::db(backend).await;
        let issued = ApiToken {
            expires_at: Some(99),
            ..token("ws", "u1", "t1", 5)
        };
        stored_tokens(&t.db, std::slice::from_ref(&issued)).await;
        assert_eq!(
            token_by_hash(t.db.pool(), "hash-t1")
                .await
                .expect("by hash"),
            Some(issued.clone())
        );
        assert_eq!(
            token_by_hash(t.db.pool(), "hash-t2")
                .await
                .expect("unknown"),
            None
        );
        assert_eq!(
            find_token(t.db.pool(), "ws", "t1").await.expect("find"),
            Some((issued.clone(), "hash-t1".to_owned()))
        );
        assert_eq!(
            find_token(t.db.pool(), "other", "t1")
                .await
                .expect("other ws"),
            None
        );

        let mut tx = t.db.begin().await.expect("begin");
        assert!(
            !revoke_token(&mut tx, "other", "t1", 9)
                .await
                .expect("other ws")
        );
        assert!(revoke_token(&mut tx, "ws", "t1", 9).await.expect("revoke"));
        assert!(
            !revoke_token(&mut tx, "ws", "t1", 10).await.expect("again"),
            "revoked once"
        );
        t.db.commit(tx).await.expect("commit");
        let revoked = token_by_hash(t.db.pool(), "hash-t1")
            .await
            .expect("by hash");
        assert_eq!(revoked.and_then(|t| t.revoked_at), Some(9));
    }

    async fn tokens_are_listed_newest_first_in_pages(backend: Backend) {
        let t = testing::db(backend).await;
        stored_tokens(
            &t.db,
            &[
                token("ws", "u1", "a", 1),
                token("ws", "u2", "b", 2),
                token("ws", "u1", "c", 3),
                token("ws", "u1", "d", 3),
                token("other", "u9", "e", 4),
            ],
        )
        .await;
        let mut tx = t.db.begin().await.expect("begin");
        revoke_token(&mut tx, "ws", "c", 5).await.expect("revoke");
        t.db.commit(tx).await.expect("commit");
        let ids = |tokens: Vec<ApiToken>| tokens.into_iter().map(|t| t.id).collect::<Vec<_>>();
        let all = TokenFilter {
            user_id: None,
            include_revoked: true,
        };
        let first = list_tokens(t.db.pool(), "ws", &all, None, 2)
            .await
            .expect("list");
        assert_eq!(ids(first), ["d", "c"]);
        let after = Cursor {
            key: 3,
            id: "c".into(),
        };
        let rest = list_tokens(t.db.pool(), "ws", &all, Some(&after), 2)
            .await
            .expect("list");
        assert_eq!(ids(rest), ["b", "a"]);
        let u1_valid = TokenFilter {
            user_id: Some("u1"),
            include_revoked: false,
        };
        let mine = list_tokens(t.db.pool(), "ws", &u1_valid, None, 10)
            .await
            .expect("list");
        assert_eq!(ids(mine), ["d", "a"]);
    }

    async fn last_use_only_moves_forward(backend: Backend) {
        let t = testing::db(backend).await;
        stored_tokens(&t.db, &[token("ws", "u1", "t1", 1)]).await;
        let last_used = || async {
            token_by_hash(t.db.pool(), "hash-t1")
                .await
                .expect("by hash")
                .and_then(|t| t.last_used_at)
        };
        touch_token(t.db.pool(), "t1", 120).await.expect("touch");
        assert_eq!(last_used().await, Some(120));
        touch_token(t.db.pool(), "t1", 60).await.expect("touch");
        assert_eq!(last_used().await, Some(120), "an older minute is ignored");
        touch_token(t.db.pool(), "t1", 180).await.expect("touch");
        assert_eq!(last_used().await, Some(180));
    }
}
