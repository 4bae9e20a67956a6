//! How the process starts contacts: the gRPC API over the service's
//! database. Contacts consumes no events yet; the runner adds the outbox
//! relay (which publishes `contact.created`) and the readiness checks.

use telenet_runtime::{ServiceContext, Started};

use crate::{Config, ContactsService};

/// Build contacts from its database and hand back its gRPC service.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let service = ContactsService::new(ctx.db()?, ctx.config).await?;
    Ok(Started::new().grpc(service.grpc()))
}
