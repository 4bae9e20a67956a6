//! Contacts on both backends: upsert by identity is idempotent, identities are
//! listed, pages are stable, and workspaces never see each other's contacts.

use telenet_contacts::{ContactsService, MIGRATIONS};
use telenet_proto::common::v1::PageRequest;
use telenet_proto::contacts::v1::{ListContactsRequest, UpsertByIdentityRequest};
use telenet_store::{Db, outbox, testing};

fn upsert(ws: &str, ext: &str, name: &str) -> UpsertByIdentityRequest {
    UpsertByIdentityRequest {
        workspace_id: ws.into(),
        channel_id: "ch1".into(),
        external_id: ext.into(),
        display_name: name.into(),
    }
}

async fn contract(db: Db) {
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let svc = ContactsService::new(db.clone(), Default::default())
        .await
        .expect("service");

    let (a, created) = svc
        .upsert_by_identity(&upsert("wsA", "+1", "Ana"))
        .await
        .expect("upsert");
    assert!(created);
    assert_eq!(a.display_name, "Ana");
    assert_eq!(a.identities.len(), 1);
    assert_eq!(a.identities[0].external_id, "+1");
    let (again, created) = svc
        .upsert_by_identity(&upsert("wsA", "+1", "Other"))
        .await
        .expect("upsert");
    assert!(!created);
    assert_eq!(again.id, a.id);
    assert_eq!(again.display_name, "Ana");
    // one contact.created event waits in the outbox
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 1);

    // The same identity in another workspace is another contact.
    let (b, created) = svc
        .upsert_by_identity(&upsert("wsB", "+1", "Bea"))
        .await
        .expect("upsert");
    assert!(created);
    assert_ne!(b.id, a.id);
    let err = svc.get("wsB", &a.id).await.expect_err("isolated");
    assert_eq!(err.to_status().code(), tonic::Code::NotFound);

    // An empty name falls back to the identity.
    let (c, _) = svc
        .upsert_by_identity(&upsert("wsA", "+2", " "))
        .await
        .expect("upsert");
    assert_eq!(c.display_name, "+2");

    // Paging: 3 contacts in wsA, pages of 2.
    svc.upsert_by_identity(&upsert("wsA", "+3", "Cid"))
        .await
        .expect("upsert");
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = svc
            .list(&ListContactsRequest {
                workspace_id: "wsA".into(),
                page: Some(PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }),
            })
            .await
            .expect("list");
        assert!(items.len() <= 2);
        seen.extend(items.into_iter().map(|c| c.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen.len(), 3);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 3);

    let err = svc
        .upsert_by_identity(&upsert("wsA", "", "x"))
        .await
        .expect_err("validation");
    assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("external_id"));
    let err = svc
        .list(&ListContactsRequest {
            workspace_id: "wsA".into(),
            page: Some(PageRequest {
                page_size: 2,
                page_token: "%%".into(),
            }),
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn contacts_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    contract(
        Db::connect(&testing::sqlite_in(dir.path(), "contacts"), "contacts")
            .await
            .expect("db"),
    )
    .await;
}

#[tokio::test]
async fn contacts_on_postgres() {
    let url = testing::fresh_postgres().await;
    contract(Db::connect(&url, "contacts").await.expect("db")).await;
}
