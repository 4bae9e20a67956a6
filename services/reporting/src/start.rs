//! How the process starts reporting: the gRPC API and the event consumer
//! over the service's database and the process's bus. The runner adds the
//! outbox relay and the readiness checks.

use telenet_runtime::{Phase, ServiceContext, Started};

use crate::{Config, NAME, ReportingService};

/// Build reporting, declare its queue (so no event published from now on is
/// missed, however late the runner starts the consumer) and hand back its
/// gRPC service and its consumer.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let service = ReportingService::new(ctx.db()?, ctx.bus.clone(), ctx.config).await?;
    let events = service.subscribe().await?;
    let consumer = service.clone();
    Ok(Started::new().grpc(service.grpc()).task(
        format!("{NAME}.events"),
        Phase::Consume,
        move |token| async move {
            consumer.consume(events, token).await;
            Ok(())
        },
    ))
}
