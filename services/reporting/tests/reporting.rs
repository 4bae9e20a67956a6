//! Reporting on both backends, started as the process starts it and asked
//! over gRPC: events fed through the in-memory bus are counted per UTC day
//! and channel, once each however often they arrive, events that can never
//! be counted are dead-lettered, and a workspace only ever sees its own
//! counts.

use std::sync::Arc;
use std::time::Duration;

use telenet_bus::memory::MemoryBus;
use telenet_bus::{Event, RetryPolicy, SharedBus};
use telenet_kit::grpc::GrpcChannel;
use telenet_proto::common::v1::TimeRange;
use telenet_proto::conversations::v1::{Conversation, Message, MessageDirection};
use telenet_proto::events::v1::{
    ConversationClosed, ConversationOpened, MessageCreated, event_envelope::Payload,
};
use telenet_proto::reporting::v1::reports_client::ReportsClient;
use telenet_proto::reporting::v1::{DailyVolume, GetDailyVolumeRequest};
use telenet_reporting::{Config, GROUP, MIGRATIONS, NAME, start};
use telenet_runtime::testing::{TestService, TestSetup};
use telenet_store::events;
use telenet_store::testing::Backend;
use tonic::Status;

// 2024-03-01T00:00:00Z
const MARCH_1: i64 = 1_709_251_200;
const DAY: i64 = 86_400;

/// Reporting started as the process starts it, on an in-memory bus with
/// short retry delays, answering over gRPC.
struct Harness {
    service: TestService,
    client: ReportsClient<GrpcChannel>,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        let bus: SharedBus = Arc::new(MemoryBus::new(RetryPolicy {
            delays: vec![Duration::from_millis(20); 5],
        }));
        // `start` declares the group's queue before it returns, so what is
        // published right after is counted.
        let service = TestService::start(
            TestSetup::new(NAME, Config { concurrency: 4 })
                .database(backend, MIGRATIONS)
                .bus(bus),
            start,
        )
        .await;
        let client = ReportsClient::new(service.channel());
        Self { service, client }
    }

    async fn publish(&self, events: &[Event]) {
        self.service.bus.publish(events).await.expect("publish");
    }

    async fn report(&self, request: GetDailyVolumeRequest) -> Result<Vec<DailyVolume>, Status> {
        let reply = self.client.clone().get_daily_volume(request).await?;
        Ok(reply.into_inner().rows)
    }

    async fn volume(&self, ws: &str, start: i64, end: i64, channel: &str) -> Vec<DailyVolume> {
        self.report(request(ws, start, end, channel))
            .await
            .expect("daily volume")
    }

    /// Poll until the report equals `expected`, then make sure it stays so
    /// (nothing counted twice arrives late).
    async fn expect_volume(&self, ws: &str, start: i64, end: i64, expected: &[Row]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows = rows(&self.volume(ws, start, end, "").await);
            if rows == expected {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "report of {ws}: {rows:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rows(&self.volume(ws, start, end, "").await), expected);
    }

    async fn stop(self) {
        self.service.stop().await;
    }
}

/// (day, channel, opened, closed, in, out)
type Row = (String, String, u64, u64, u64, u64);

fn row(day: &str, channel: &str, counts: [u64; 4]) -> Row {
    (
        day.into(),
        channel.into(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
    )
}

fn rows(volume: &[DailyVolume]) -> Vec<Row> {
    volume
        .iter()
        .map(|v| {
            (
                v.day.clone(),
                v.channel_id.clone(),
                v.conversations_opened,
                v.conversations_closed,
                v.messages_in,
                v.messages_out,
            )
        })
        .collect()
}

fn request(ws: &str, start: i64, end: i64, channel: &str) -> GetDailyVolumeRequest {
    GetDailyVolumeRequest {
        workspace_id: ws.into(),
        range: Some(TimeRange {
            start: Some(prost_types::Timestamp {
                seconds: start,
                nanos: 0,
            }),
            end: Some(prost_types::Timestamp {
                seconds: end,
                nanos: 0,
            }),
        }),
        channel_id: channel.into(),
    }
}

/// An event of `ws` that happened at `seconds` + `nanos`.
fn event(ws: &str, seconds: i64, nanos: i32, payload: Payload) -> Event {
    let mut env = events::envelope(ws, payload, None);
    env.occurred_at = Some(prost_types::Timestamp { seconds, nanos });
    events::to_bus(&env)
}

/// A conversation of its own on `channel`.
fn conversation(channel: &str) -> Conversation {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Conversation {
        id: format!("conv-{n}"),
        channel_id: channel.into(),
        ..Default::default()
    }
}

fn opened(ws: &str, at: i64, channel: &str) -> Event {
    opened_of(ws, at, conversation(channel))
}

fn opened_of(ws: &str, at: i64, conversation: Conversation) -> Event {
    event(
        ws,
        at,
        0,
        Payload::ConversationOpened(ConversationOpened {
            conversation: Some(conversation),
        }),
    )
}

fn closed(ws: &str, at: i64, channel: &str) -> Event {
    closed_of(ws, at, conversation(channel))
}

fn closed_of(ws: &str, at: i64, conversation: Conversation) -> Event {
    event(
        ws,
        at,
        0,
        Payload::ConversationClosed(ConversationClosed {
            conversation: Some(conversation),
        }),
    )
}

fn message(ws: &str, at: i64, channel: &str, direction: MessageDirection) -> Event {
    event(
        ws,
        at,
        0,
        Payload::MessageCreated(MessageCreated {
            message: Some(Message {
                id: "msg".into(),
                direction: direction as i32,
                ..Default::default()
            }),
            channel_id: channel.into(),
            contact_id: "contact".into(),
        }),
    )
}

telenet_store::on_both_backends!(
    counts_per_utc_day_and_channel_once_each,
    workspaces_are_isolated,
    ranges_are_validated,
    uncountable_events_are_dead_lettered,
    a_conversation_counts_its_opening_and_closing_once,
);

async fn counts_per_utc_day_and_channel_once_each(backend: Backend) {
    let h = Harness::start(backend).await;
    use MessageDirection::{Inbound, Outbound, Unspecified};
    // The last nanosecond of 29 February and the first of 1 March (UTC).
    let late = event(
        "ws1",
        MARCH_1 - 1,
        999_999_999,
        Payload::ConversationOpened(ConversationOpened {
            conversation: Some(conversation("ch1")),
        }),
    );
    let first_in = message("ws1", MARCH_1, "ch1", Inbound);
    h.publish(&[
        late.clone(),
        opened("ws1", MARCH_1, "ch1"),
        first_in.clone(),
        message("ws1", MARCH_1 + 60, "ch1", Inbound),
        message("ws1", MARCH_1 + 120, "ch1", Outbound),
        // Without a direction it counts nowhere.
        message("ws1", MARCH_1 + 130, "ch1", Unspecified),
        closed("ws1", MARCH_1 + 3600, "ch1"),
        opened("ws1", MARCH_1 + DAY - 1, "ch2"),
        message("ws1", MARCH_1 + DAY, "ch2", Outbound),
    ])
    .await;
    // Duplicates: at once, and again later.
    h.publish(&[late.clone(), first_in.clone(), first_in.clone()])
        .await;

    let feb_29 = MARCH_1 - DAY;
    let expected = vec![
        row("2024-02-29", "ch1", [1, 0, 0, 0]),
        row("2024-03-01", "ch1", [1, 1, 2, 1]),
        row("2024-03-01", "ch2", [1, 0, 0, 0]),
        row("2024-03-02", "ch2", [0, 0, 0, 1]),
    ];
    h.expect_volume("ws1", feb_29, MARCH_1 + 2 * DAY, &expected)
        .await;
    h.publish(&[late, first_in]).await;
    h.expect_volume("ws1", feb_29, MARCH_1 + 2 * DAY, &expected)
        .await;

    // The range is [start, end): ending at midnight leaves that day out, and
    // any part of a day brings the whole day in.
    assert_eq!(
        rows(&h.volume("ws1", feb_29, MARCH_1, "").await),
        expected[..1]
    );
    assert_eq!(
        rows(&h.volume("ws1", MARCH_1 + 3600, MARCH_1 + DAY + 1, "").await),
        expected[1..]
    );
    assert!(
        h.volume("ws1", MARCH_1 + 2 * DAY, MARCH_1 + 3 * DAY, "")
            .await
            .is_empty()
    );

    // Channel filter.
    assert_eq!(
        rows(&h.volume("ws1", feb_29, MARCH_1 + 2 * DAY, "ch2").await),
        vec![expected[2].clone(), expected[3].clone()]
    );
    assert!(
        h.volume("ws1", feb_29, MARCH_1 + 2 * DAY, "ch9")
            .await
            .is_empty()
    );

    // One channel of several days.
    let reply = h
        .report(request("ws1", feb_29, MARCH_1 + 2 * DAY, "ch1"))
        .await
        .expect("report");
    assert_eq!(rows(&reply), expected[..2]);
    h.stop().await;
}

async fn workspaces_are_isolated(backend: Backend) {
    let h = Harness::start(backend).await;
    h.publish(&[
        opened("wsA", MARCH_1 + 10, "shared-channel"),
        message(
            "wsA",
            MARCH_1 + 20,
            "shared-channel",
            MessageDirection::Inbound,
        ),
        opened("wsB", MARCH_1 + 30, "shared-channel"),
        opened("wsB", MARCH_1 + 40, "shared-channel"),
    ])
    .await;
    h.expect_volume(
        "wsA",
        MARCH_1,
        MARCH_1 + DAY,
        &[row("2024-03-01", "shared-channel", [1, 0, 1, 0])],
    )
    .await;
    h.expect_volume(
        "wsB",
        MARCH_1,
        MARCH_1 + DAY,
        &[row("2024-03-01", "shared-channel", [2, 0, 0, 0])],
    )
    .await;
    assert!(h.volume("wsC", MARCH_1, MARCH_1 + DAY, "").await.is_empty());
    h.stop().await;
}

async fn ranges_are_validated(backend: Backend) {
    let h = Harness::start(backend).await;
    let invalid = |req: GetDailyVolumeRequest, field: &'static str| {
        let h = &h;
        async move {
            let status = h.report(req).await.expect_err("invalid request");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(field), "{}", status.message());
        }
    };
    invalid(request("", MARCH_1, MARCH_1 + DAY, ""), "workspace_id").await;
    let mut no_range = request("ws1", MARCH_1, MARCH_1 + DAY, "");
    no_range.range = None;
    invalid(no_range, "range").await;
    let mut no_start = request("ws1", MARCH_1, MARCH_1 + DAY, "");
    if let Some(range) = no_start.range.as_mut() {
        range.start = None;
    }
    invalid(no_start, "range.start").await;
    invalid(request("ws1", MARCH_1, MARCH_1, ""), "range.end").await;
    invalid(request("ws1", MARCH_1 + DAY, MARCH_1, ""), "range.end").await;
    invalid(
        request("ws1", MARCH_1, MARCH_1 + 366 * DAY + 1, ""),
        "366 days",
    )
    .await;
    // A full leap year is allowed.
    assert!(
        h.volume("ws1", MARCH_1, MARCH_1 + 366 * DAY, "")
            .await
            .is_empty()
    );
    h.stop().await;
}

async fn uncountable_events_are_dead_lettered(backend: Backend) {
    let h = Harness::start(backend).await;
    let nowhere = opened("ws1", MARCH_1, " ");
    h.publish(&[nowhere.clone(), opened("ws1", MARCH_1 + 10, "ch1")])
        .await;
    h.expect_volume(
        "ws1",
        MARCH_1,
        MARCH_1 + DAY,
        &[row("2024-03-01", "ch1", [1, 0, 0, 0])],
    )
    .await;
    let dead = h
        .service
        .bus
        .drain_dead_letters(GROUP, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.id, nowhere.id);
    assert_eq!(
        dead[0].reason,
        format!("event {}: no channel_id", nowhere.id)
    );
    h.stop().await;
}

/// Events of different ids reporting the same conversation's opening or
/// closing (two closes that raced, an event published again under a new
/// id), applied concurrently: each counts once, in its workspace.
async fn a_conversation_counts_its_opening_and_closing_once(backend: Backend) {
    let h = Harness::start(backend).await;
    let raced = conversation("ch1");
    let mut reports = Vec::new();
    for n in 0..4 {
        reports.push(opened_of("ws1", MARCH_1 + n, raced.clone()));
        reports.push(closed_of("ws1", MARCH_1 + 60 + n, raced.clone()));
    }
    // The same conversation id in another workspace is another conversation.
    reports.push(closed_of("ws2", MARCH_1 + 60, raced.clone()));
    // And each delivered twice.
    let again = reports.clone();
    h.publish(&reports).await;
    h.publish(&again).await;
    h.expect_volume(
        "ws1",
        MARCH_1,
        MARCH_1 + DAY,
        &[row("2024-03-01", "ch1", [1, 1, 0, 0])],
    )
    .await;
    h.expect_volume(
        "ws2",
        MARCH_1,
        MARCH_1 + DAY,
        &[row("2024-03-01", "ch1", [0, 1, 0, 0])],
    )
    .await;
    h.stop().await;
}
