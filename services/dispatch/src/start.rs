//! How the process starts dispatch: the `Dispatch` API, and the
//! `outbound.requested` consumer, subscribed before `start` returns so no
//! request published meanwhile is missed; the sweeper that fails messages
//! pending past their deadline (`Phase::Work`). Channels are looked up in ingress,
//! voice notes and download links made by media. The runner adds the
//! outbox relay (which publishes `outbound.status`) and the readiness
//! checks.

use std::sync::Arc;

use telenet_channels::directory::GrpcChannelDirectory;
use telenet_runtime::{Phase, ServiceContext, Started};

use crate::media::GrpcMediaFiles;
use crate::{Config, DispatchService, NAME};

/// Build dispatch from its database, the bus and its clients of ingress and
/// media, and hand back its gRPC service and its consumer.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    // A lookup is bounded by the client stack (`directory_timeout`); one
    // that runs out answers DEADLINE_EXCEEDED, which the directory reports
    // as unavailable, so the send is retried later.
    let directory = GrpcChannelDirectory::new(
        ctx.client_with_timeout("ingress", ctx.config.directory_timeout)?,
    );
    let media = GrpcMediaFiles::new(ctx.client("media")?);
    // The process's rate-limit store (Redis when configured, shared by
    // every replica; memory otherwise).
    let limiter = ctx.rate_limiter();
    let service =
        DispatchService::new(ctx.db()?, ctx.bus.clone(), Arc::new(directory), ctx.config)?
            .with_metrics(&ctx.metrics)
            .with_rate_limiter(limiter)
            .with_media(Arc::new(media));
    // Subscribe now: requests published before the consumer runs wait in
    // the group's queue.
    let requests = service.subscribe().await?;
    let consumer = service.clone();
    let sweeper = service.clone();
    Ok(Started::new()
        .grpc(service.grpc())
        .task(
            format!("{NAME}.outbound-requested"),
            Phase::Consume,
            move |token| async move {
                consumer.consume(requests, token).await;
                Ok(())
            },
        )
        .task(
            format!("{NAME}.pending-sweeper"),
            Phase::Work,
            move |token| async move {
                sweeper.run_sweeper(token).await;
                Ok(())
            },
        ))
}
