//! How the process starts ingress: the channel registry over gRPC, the
//! webhooks on the listener the process bound for it, and the forgetting of
//! old de-duplication keys. The runner adds the readiness checks and the
//! outbox relay (ingress publishes directly, once the broker confirms, so
//! its outbox stays empty).

use anyhow::Context as _;
use telenet_channels::Registry;
use telenet_runtime::{Phase, ServiceContext, Started};

use crate::{Config, IngressService, NAME, webhook};

/// Build ingress from its database, the bus and the listener bound for its
/// webhooks, with every provider of this build.
pub async fn start(mut ctx: ServiceContext<Config>) -> anyhow::Result<Started> {
    let listener = ctx.listener.take().with_context(|| {
        format!("the {NAME} service needs a listener bound by the process for its webhooks")
    })?;
    let db = ctx.db()?;
    let config = ctx.config.following_listener(listener.local_addr()?);
    let service = IngressService::new(db, ctx.bus, config, Registry::builtin())?;
    let forgetting = service.clone();
    Ok(Started::new()
        .grpc(service.grpc())
        .http("webhooks", listener, webhook::router(service))
        .task(
            format!("{NAME}.webhook-keys"),
            Phase::Work,
            move |token| async move {
                forgetting.forget_old_webhook_keys(token).await;
                Ok(())
            },
        ))
}
