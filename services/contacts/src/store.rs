//! The contacts tables (`contacts`, `identities`): every statement of the
//! service, each scoped by workspace. Writes take the caller's transaction,
//! so a change and the events it announces commit together.

use telenet_store::cursor::{Cursor, finish_page};
use telenet_store::sqlx::{self, Row, any::AnyRow};
use telenet_store::{Db, StoreError, Tx};

use crate::domain::{Contact, ContactsPage, Identity, IdentityKey, NewContact};

/// The contact that owns `identity`, if any.
pub(crate) async fn contact_of_identity(
    db: &Db,
    identity: &IdentityKey,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "SELECT contact_id FROM identities \
         WHERE workspace_id = $1 AND channel_id = $2 AND external_id = $3",
    )
    .bind(&identity.workspace_id)
    .bind(&identity.channel_id)
    .bind(&identity.external_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| r.try_get("contact_id")).transpose()?)
}

/// Insert a contact without identities.
pub(crate) async fn insert_contact(
    tx: &mut Tx<'_>,
    contact: &NewContact,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO contacts (id, workspace_id, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&contact.id)
    .bind(&contact.workspace_id)
    .bind(&contact.display_name)
    .bind(contact.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Give `identity` to `contact_id`, first seen `at`. `false` when it
/// belongs to a contact already (that contact keeps it).
pub(crate) async fn claim_identity(
    tx: &mut Tx<'_>,
    identity: &IdentityKey,
    contact_id: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO identities (workspace_id, channel_id, external_id, contact_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, channel_id, external_id) DO NOTHING",
    )
    .bind(&identity.workspace_id)
    .bind(&identity.channel_id)
    .bind(&identity.external_id)
    .bind(contact_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// One contact of the workspace with its identities, oldest first.
pub(crate) async fn contact(
    db: &Db,
    workspace_id: &str,
    contact_id: &str,
) -> Result<Option<Contact>, StoreError> {
    let row = sqlx::query(
        "SELECT id, workspace_id, display_name, created_at, updated_at FROM contacts \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace_id)
    .bind(contact_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut contact = contact_of(&row)?;
    contact.identities = identities_of(db, workspace_id, contact_id).await?;
    Ok(Some(contact))
}

async fn identities_of(
    db: &Db,
    workspace_id: &str,
    contact_id: &str,
) -> Result<Vec<Identity>, StoreError> {
    let rows = sqlx::query(
        "SELECT channel_id, external_id, created_at FROM identities \
         WHERE workspace_id = $1 AND contact_id = $2 ORDER BY created_at",
    )
    .bind(workspace_id)
    .bind(contact_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Identity {
                channel_id: r.try_get("channel_id")?,
                external_id: r.try_get("external_id")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// A page of the workspace's contacts, newest first (ties by id, also
/// descending), without identities; and the token of the next page, empty
/// after the last.
pub(crate) async fn list_contacts(
    db: &Db,
    page: &ContactsPage,
) -> Result<(Vec<Contact>, String), StoreError> {
    let (key, id) = start_after(page.after.as_ref());
    let rows = sqlx::query(
        "SELECT id, workspace_id, display_name, created_at, updated_at FROM contacts \
         WHERE workspace_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(&page.workspace_id)
    .bind(key)
    .bind(id)
    .bind(page.size + 1)
    .fetch_all(db.pool())
    .await?;
    let mut contacts = rows.iter().map(contact_of).collect::<Result<Vec<_>, _>>()?;
    let next = finish_page(&mut contacts, page.size, |c| Cursor {
        key: c.created_at,
        id: c.id.clone(),
    });
    Ok((contacts, next))
}

/// Above any id: the first page (or a token without an id) starts past
/// every contact of its time.
const PAST_EVERY_ID: &str = "\u{10FFFF}";

/// The position a page starts after: the cursor's, or past every contact
/// for the first page.
fn start_after(after: Option<&Cursor>) -> (i64, &str) {
    let (key, id) = after.map_or((i64::MAX, ""), |c| (c.key, c.id.as_str()));
    (key, if id.is_empty() { PAST_EVERY_ID } else { id })
}

fn contact_of(row: &AnyRow) -> Result<Contact, sqlx::Error> {
    Ok(Contact {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        display_name: row.try_get("display_name")?,
        identities: Vec::new(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIGRATIONS;
    use telenet_store::testing::{Backend, TestDb};

    async fn fixture(backend: Backend) -> TestDb {
        backend.database("contacts", &MIGRATIONS).await
    }

    fn key(ws: &str, channel: &str, external: &str) -> IdentityKey {
        IdentityKey {
            workspace_id: ws.into(),
            channel_id: channel.into(),
            external_id: external.into(),
        }
    }

    fn new_contact(ws: &str, id: &str, at: i64) -> NewContact {
        NewContact {
            id: id.into(),
            workspace_id: ws.into(),
            display_name: format!("name of {id}"),
            created_at: at,
        }
    }

    /// Create `id` with `identities` in one transaction; whether every
    /// identity was free.
    async fn create(db: &Db, contact: &NewContact, identities: &[IdentityKey]) -> bool {
        let mut tx = db.begin().await.expect("begin");
        insert_contact(&mut tx, contact).await.expect("insert");
        let mut all_claimed = true;
        for (i, identity) in identities.iter().enumerate() {
            let at = contact.created_at + i64::try_from(i).expect("few identities");
            all_claimed &= claim_identity(&mut tx, identity, &contact.id, at)
                .await
                .expect("claim");
        }
        tx.commit().await.expect("commit");
        all_claimed
    }

    telenet_store::on_both_backends!(
        an_identity_belongs_to_one_contact,
        contacts_are_read_within_their_workspace,
        pages_run_newest_first_and_resume_after_ties,
    );

    async fn an_identity_belongs_to_one_contact(backend: Backend) {
        let f = fixture(backend).await;
        let phone = key("wsA", "ch1", "+1");
        assert_eq!(
            contact_of_identity(&f.db, &phone).await.expect("read"),
            None
        );
        assert!(
            create(
                &f.db,
                &new_contact("wsA", "a", 10),
                std::slice::from_ref(&phone)
            )
            .await
        );
        assert!(
            !create(
                &f.db,
                &new_contact("wsA", "b", 20),
                std::slice::from_ref(&phone)
            )
            .await
        );
        assert_eq!(
            contact_of_identity(&f.db, &phone).await.expect("read"),
            Some("a".to_owned())
        );
        // The same id on another channel or in another workspace is free.
        assert_eq!(
            contact_of_identity(&f.db, &key("wsA", "ch2", "+1"))
                .await
                .expect("read"),
            None
        );
        assert!(
            create(
                &f.db,
                &new_contact("wsB", "c", 30),
                &[key("wsB", "ch1", "+1")]
            )
            .await
        );
        assert_eq!(
            contact_of_identity(&f.db, &phone).await.expect("read"),
            Some("a".to_owned())
        );
        f.db.close().await;
    }

    async fn contacts_are_read_within_their_workspace(backend: Backend) {
        let f = fixture(backend).await;
        let identities = [
            key("wsA", "sms", "+1"),
            key("wsA", "mail", "ana@example.com"),
        ];
        assert!(create(&f.db, &new_contact("wsA", "a", 100), &identities).await);

        let ana = contact(&f.db, "wsA", "a")
            .await
            .expect("read")
            .expect("found");
        assert_eq!(ana.display_name, "name of a");
        assert_eq!((ana.created_at, ana.updated_at), (100, 100));
        let seen: Vec<_> = ana
            .identities
            .iter()
            .map(|i| (i.channel_id.as_str(), i.external_id.as_str(), i.created_at))
            .collect();
        assert_eq!(
            seen,
            vec![("sms", "+1", 100), ("mail", "ana@example.com", 101)]
        );

        assert_eq!(contact(&f.db, "wsB", "a").await.expect("read"), None);
        assert_eq!(contact(&f.db, "wsA", "nobody").await.expect("read"), None);
        f.db.close().await;
    }

    async fn pages_run_newest_first_and_resume_after_ties(backend: Backend) {
        let f = fixture(backend).await;
        // "b" and "c" share a creation time: the id breaks the tie.
        for (id, at) in [("a", 1), ("b", 2), ("c", 2), ("d", 3), ("e", 4)] {
            assert!(create(&f.db, &new_contact("wsA", id, at), &[key("wsA", "ch", id)]).await);
        }
        assert!(create(&f.db, &new_contact("wsB", "z", 5), &[]).await);

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = ContactsPage {
                workspace_id: "wsA".into(),
                size: 2,
                after,
            };
            let (contacts, next) = list_contacts(&f.db, &page).await.expect("list");
            assert!(contacts.len() <= 2);
            assert!(contacts.iter().all(|c| c.identities.is_empty()));
            seen.extend(contacts.into_iter().map(|c| c.id));
            if next.is_empty() {
                break;
            }
            after = Cursor::decode(&next).expect("token");
        }
        assert_eq!(seen, ["e", "d", "c", "b", "a"]);

        let exact = ContactsPage {
            workspace_id: "wsB".into(),
            size: 1,
            after: None,
        };
        let (contacts, next) = list_contacts(&f.db, &exact).await.expect("list");
        assert_eq!(contacts.len(), 1);
        assert_eq!(next, "", "a full last page has no next page");
        f.db.close().await;
    }
}
