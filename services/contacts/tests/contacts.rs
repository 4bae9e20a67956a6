//! Contacts on both backends, through its gRPC API: upsert by identity is
//! idempotent, identities are listed, pages are stable, and workspaces never
//! see each other's contacts; started as the process starts it, a new
//! contact is announced on the bus.

use std::time::Duration;

use telenet_bus::SubscribeSpec;
use telenet_contacts::{Config, ContactsService, MIGRATIONS, NAME, start};
use telenet_proto::common::v1::PageRequest;
use telenet_proto::contacts::v1::contacts_client::ContactsClient;
use telenet_proto::contacts::v1::contacts_server::Contacts;
use telenet_proto::contacts::v1::{
    Contact, GetContactRequest, ListContactsRequest, ListContactsResponse, UpsertByIdentityRequest,
};
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::testing::Backend;
use telenet_store::{Db, events, outbox};
use tonic::{Code, Request, Status};

telenet_store::on_both_backends!(
    upsert_get_and_list,
    concurrent_upserts_of_one_identity_make_one_contact,
    a_started_service_announces_new_contacts,
);

fn upsert(ws: &str, ext: &str, name: &str) -> UpsertByIdentityRequest {
    UpsertByIdentityRequest {
        workspace_id: ws.into(),
        channel_id: "ch1".into(),
        external_id: ext.into(),
        display_name: name.into(),
    }
}

fn list_page(ws: &str, size: u32, token: &str) -> ListContactsRequest {
    ListContactsRequest {
        workspace_id: ws.into(),
        page: Some(PageRequest {
            page_size: size,
            page_token: token.into(),
        }),
    }
}

/// The service called in process, through its gRPC adapter.
struct InProcess(ContactsService);

impl InProcess {
    async fn upsert(&self, req: UpsertByIdentityRequest) -> Result<(Contact, bool), Status> {
        let reply = Contacts::upsert_by_identity(&self.0, Request::new(req))
            .await?
            .into_inner();
        Ok((
            reply.contact.expect("upsert answers the contact"),
            reply.created,
        ))
    }

    async fn get(&self, ws: &str, id: &str) -> Result<Contact, Status> {
        let req = GetContactRequest {
            workspace_id: ws.into(),
            contact_id: id.into(),
        };
        Ok(Contacts::get_contact(&self.0, Request::new(req))
            .await?
            .into_inner())
    }

    async fn list(&self, req: ListContactsRequest) -> Result<ListContactsResponse, Status> {
        Ok(Contacts::list_contacts(&self.0, Request::new(req))
            .await?
            .into_inner())
    }
}

/// A migrated database on `backend`, kept in `dir` when it is a file.
async fn database(backend: Backend, dir: &tempfile::TempDir) -> Db {
    let db = Db::connect(&backend.url(dir.path(), NAME).await, NAME)
        .await
        .expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    db
}

async fn in_process(db: &Db) -> InProcess {
    InProcess(
        ContactsService::new(db.clone(), Default::default())
            .await
            .expect("service"),
    )
}

async fn upsert_get_and_list(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(backend, &dir).await;
    let svc = in_process(&db).await;

    let (a, created) = svc
        .upsert(upsert("wsA", "+1", "Ana"))
        .await
        .expect("upsert");
    assert!(created);
    assert_eq!(a.display_name, "Ana");
    assert_eq!(a.identities.len(), 1);
    assert_eq!(a.identities[0].external_id, "+1");
    let (again, created) = svc
        .upsert(upsert("wsA", "+1", "Other"))
        .await
        .expect("upsert");
    assert!(!created);
    assert_eq!(again.id, a.id);
    assert_eq!(again.display_name, "Ana");
    // one contact.created event waits in the outbox
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 1);

    // The same identity in another workspace is another contact.
    let (b, created) = svc
        .upsert(upsert("wsB", "+1", "Bea"))
        .await
        .expect("upsert");
    assert!(created);
    assert_ne!(b.id, a.id);
    let status = svc.get("wsB", &a.id).await.expect_err("isolated");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(svc.get("wsA", &a.id).await.expect("get"), again);

    // An empty name falls back to the identity.
    let (c, _) = svc.upsert(upsert("wsA", "+2", " ")).await.expect("upsert");
    assert_eq!(c.display_name, "+2");

    // Paging: 3 contacts in wsA, pages of 2.
    svc.upsert(upsert("wsA", "+3", "Cid"))
        .await
        .expect("upsert");
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = svc.list(list_page("wsA", 2, &token)).await.expect("list");
        assert!(page.contacts.len() <= 2);
        seen.extend(page.contacts.into_iter().map(|c| c.id));
        let next = page.page.expect("page info").next_page_token;
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

    let status = svc
        .upsert(upsert("wsA", "", "x"))
        .await
        .expect_err("validation");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("external_id"));
    let status = svc
        .list(list_page("wsA", 2, "%%"))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::InvalidArgument);
    db.close().await;
}

/// The first message of a new contact can reach several consumers at once:
/// they all get the one contact, and only one of them creates it.
async fn concurrent_upserts_of_one_identity_make_one_contact(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(backend, &dir).await;
    let svc = std::sync::Arc::new(in_process(&db).await);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.upsert(upsert("wsA", "+1", &format!("Ana {i}"))).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut creations = 0;
    for call in calls {
        let (contact, created) = call.await.expect("joined").expect("upsert");
        ids.push(contact.id);
        creations += usize::from(created);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one contact: {ids:?}");
    assert_eq!(creations, 1);
    assert_eq!(outbox::backlog(&db).await.expect("backlog"), 1);
    let listed = svc.list(list_page("wsA", 0, "")).await.expect("list");
    assert_eq!(listed.contacts.len(), 1);
    db.close().await;
}

async fn a_started_service_announces_new_contacts(backend: Backend) {
    let service = TestService::start(
        TestSetup::new(NAME, Config::default()).database(backend, MIGRATIONS),
        start,
    )
    .await;
    let mut announced = service
        .bus
        .subscribe(SubscribeSpec::new("contacts-test", &["contact.created"]))
        .await
        .expect("subscribe");
    let mut client = ContactsClient::new(service.channel());

    let reply = client
        .upsert_by_identity(upsert("wsA", "+1", "Ana"))
        .await
        .expect("upsert")
        .into_inner();
    assert!(reply.created);
    let ana = reply.contact.expect("contact");

    // The runner's relay publishes what the upsert wrote to the outbox.
    let delivery = tokio::time::timeout(Duration::from_secs(10), announced.next())
        .await
        .expect("contact.created in time")
        .expect("a delivery");
    let env = events::from_bus(&delivery.event).expect("an envelope");
    assert_eq!(env.workspace_id, "wsA");
    match env.payload {
        Some(Payload::ContactCreated(created)) => {
            assert_eq!(created.contact_id, ana.id);
            assert_eq!(created.channel_id, "ch1");
            assert_eq!(created.display_name, "Ana");
        }
        other => panic!("expected contact.created, got {other:?}"),
    }
    delivery.ack().await.expect("ack");

    let status = client
        .get_contact(GetContactRequest {
            workspace_id: "wsB".into(),
            contact_id: ana.id.clone(),
        })
        .await
        .expect_err("another workspace's contact");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "contact not found");
    let status = client
        .upsert_by_identity(upsert("wsA", " ", "x"))
        .await
        .expect_err("no identity");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "external_id is required");
    service.stop().await;
}
