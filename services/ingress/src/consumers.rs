//! Bus handlers of ingress: the channel health view learns how sends went
//! from dispatch's `outbound.status` events (ingress owns the channel rows;
//! dispatch only reports). Each event writes at most once a minute per
//! channel and outcome (a busy channel is not one write per message), and
//! is idempotent: applying it twice leaves the same row.

use telenet_bus::{BusError, SharedBus, SubscribeSpec};
use telenet_proto::dispatch::v1::DeliveryState;
use telenet_proto::events::v1::event_envelope::Payload;
use telenet_store::consumer::{self, GroupSubscription, HandleError, Incoming};
use telenet_store::events;
use tokio_util::sync::CancellationToken;

use crate::IngressService;
use crate::store::HealthNews;

/// Consumer group of ingress's channel health.
pub const GROUP: &str = "ingress.channel-health";

/// What ingress consumes: dispatch's results.
pub fn subscription() -> SubscribeSpec {
    SubscribeSpec::new(GROUP, &["outbound.status"])
}

/// Subscribe now, so results published from now on wait for the consumer.
pub(crate) async fn subscribe(bus: &SharedBus) -> Result<GroupSubscription, BusError> {
    consumer::subscribe(bus, subscription()).await
}

/// Record each result in its channel's health until `token` is cancelled.
pub(crate) async fn run(
    service: IngressService,
    events: GroupSubscription,
    token: CancellationToken,
) {
    consumer::run_on(events, 4, token, move |incoming| {
        let service = service.clone();
        async move { record(&service, incoming).await }
    })
    .await;
}

async fn record(service: &IngressService, incoming: Incoming) -> Result<(), HandleError> {
    let env = events::from_bus(&incoming.event)?;
    let Some(Payload::OutboundStatusChanged(status)) = env.payload else {
        return Ok(());
    };
    let news = match status.state() {
        DeliveryState::Sent => HealthNews::Sent(""),
        // A retry's reason is news too: the channel is in trouble now.
        DeliveryState::Failed | DeliveryState::Pending if !status.error.is_empty() => {
            HealthNews::Sent(&status.error)
        }
        _ => return Ok(()),
    };
    service.record_health(&status.channel_id, news).await;
    Ok(())
}
