//! Starting the service in a process (the `telenet` binary, a test).

use std::sync::Arc;

use telenet_channels::directory::{CachedDirectory, GrpcChannelDirectory};
use telenet_runtime::{Phase, ServiceContext, Started};

use crate::inbox::Inbox;
use crate::members::Members;
use crate::{Config, consumers, grpc};

/// Build the service from its database, the bus and a client to contacts;
/// hand back its gRPC services (`Conversations`, `Members`, and the bus's
/// `DeadLetters`) and its
/// consumers. The consumers are subscribed before this returns, so no
/// event published from now on is missed; they consume until their phase
/// ([`Phase::Consume`]) is told to stop.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let db = ctx.db()?;
    // Reply windows come from the channel's provider; its credentials from
    // ingress, each kept a while (`directory_cache_ttl`). A lookup is
    // bounded by `directory_timeout`; one that fails refuses nothing.
    let directory = GrpcChannelDirectory::new(
        ctx.client_with_timeout("ingress", ctx.config.directory_timeout)?,
    );
    let directory = CachedDirectory::new(Arc::new(directory), ctx.config.directory_cache_ttl);
    let inbox = Inbox::new(db.clone(), ctx.client("contacts")?, ctx.config.clone())
        .with_directory(Arc::new(directory));
    let members = Members::new(db);
    let consumers = consumers::spawn(&inbox, &ctx.bus, ctx.config.consumer_concurrency).await?;
    let mut started = Started::new()
        .grpc(grpc::conversations_server(inbox))
        .grpc(grpc::members_server(members))
        .grpc(grpc::dead_letters_server(ctx.bus.clone()));
    for consumer in consumers {
        started = started.task(consumer.group, Phase::Consume, move |phase| {
            consumer.run_until(phase)
        });
    }
    Ok(started)
}
