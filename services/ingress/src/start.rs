//! How the process starts ingress: the channel registry over gRPC, the
//! webhooks on the listener the process bound for it, the channel health
//! view's consumer of dispatch's results, the forgetting of
//! old de-duplication keys, and the re-sealing of channel secrets under the
//! keyring's current key. The runner adds the readiness checks and the
//! outbox relay (ingress publishes directly, once the broker confirms, so
//! its outbox stays empty).

use std::sync::Arc;

use anyhow::Context as _;
use telenet_channels::Registry;
use telenet_runtime::{Phase, ServiceContext, Started};

use crate::{Config, IngressMetrics, IngressService, NAME, Secrets, consumers, secrets, webhook};

/// Build ingress from its database, the bus and the listener bound for its
/// webhooks, with every provider of this build.
pub async fn start(mut ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let listener = ctx.listener.take().with_context(|| {
        format!("the {NAME} service needs a listener bound by the process for its webhooks")
    })?;
    let db = ctx.db()?;
    let limiter = ctx.rate_limiter();
    let config = ctx.config.following_listener(listener.local_addr()?);
    let keyring = Arc::new(secrets::keyring(&config.encryption, &ctx.data_dir)?);
    let resealing = Secrets::new(db.clone(), keyring.clone(), config.encryption.reseal_batch)
        .with_metrics(IngressMetrics::register(&ctx.metrics));
    let reseal_interval = config.encryption.reseal_interval;
    let bus = ctx.bus.clone();
    let service = IngressService::new(db, ctx.bus, config, Registry::builtin(), keyring)?;
    let results = consumers::subscribe(&bus).await?;
    let health = service.clone();
    let forgetting = service.clone();
    let webhooks = webhook::router(service.clone(), limiter)?;
    Ok(Started::new()
        .grpc(service.grpc())
        .http("webhooks", listener, webhooks)
        .task(
            format!("{NAME}.webhook-keys"),
            Phase::Work,
            move |token| async move {
                forgetting.forget_old_webhook_keys(token).await;
                Ok(())
            },
        )
        .task(
            format!("{NAME}.channel-health"),
            Phase::Consume,
            move |token| async move {
                consumers::run(health, results, token).await;
                Ok(())
            },
        )
        .task(
            format!("{NAME}.secrets-reseal"),
            Phase::Work,
            move |token| async move {
                resealing.run(reseal_interval, token).await;
                Ok(())
            },
        ))
}
