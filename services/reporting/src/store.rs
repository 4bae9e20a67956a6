//! The `daily_volume` table: counting an event once, and reading a
//! workspace's rows; `conversation_milestones`, which keeps a
//! conversation's opening and closing from counting twice. Every statement
//! of the service, each scoped by workspace.

use telenet_store::sqlx::{self, Row, any::AnyRow};
use telenet_store::{Db, StoreError, Tx, idempotency};

use crate::domain::{Contribution, Counts, DayVolume, VolumeQuery};

/// Record that `consumer` processed `event_id` and add its contribution,
/// in one transaction, so a redelivered event counts once. `false` when the
/// event was processed already (nothing changes). A conversation's opening
/// or closing reported before, by another event, is recorded as processed
/// and adds nothing.
pub(crate) async fn count_once(
    db: &Db,
    consumer: &str,
    event_id: &str,
    contribution: Option<&Contribution>,
) -> Result<bool, StoreError> {
    let Some(mut tx) = idempotency::begin_once(db, consumer, event_id).await? else {
        return Ok(false);
    };
    if let Some(contribution) = contribution
        && first_report(&mut tx, contribution).await?
    {
        add_counts(&mut tx, contribution).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Whether the contribution is the first report of its milestone (always,
/// for contributions without one). On PostgreSQL a concurrent transaction
/// inserting the same milestone waits for this one to end, then finds it.
async fn first_report(tx: &mut Tx<'_>, contribution: &Contribution) -> Result<bool, StoreError> {
    let Some(milestone) = &contribution.milestone else {
        return Ok(true);
    };
    let inserted = sqlx::query(
        "INSERT INTO conversation_milestones (workspace_id, conversation_id, milestone) \
         VALUES ($1, $2, $3) ON CONFLICT (workspace_id, conversation_id, milestone) DO NOTHING",
    )
    .bind(&contribution.workspace_id)
    .bind(&milestone.conversation_id)
    .bind(milestone.kind.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Add to the row of the contribution's workspace, day and channel,
/// creating it at zero first.
async fn add_counts(tx: &mut Tx<'_>, contribution: &Contribution) -> Result<(), StoreError> {
    let Contribution {
        workspace_id,
        day,
        channel_id,
        counts,
        milestone: _,
    } = contribution;
    sqlx::query(
        "INSERT INTO daily_volume (workspace_id, day, channel_id, conversations_opened, \
         conversations_closed, messages_in, messages_out) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (workspace_id, day, channel_id) DO UPDATE SET \
         conversations_opened = daily_volume.conversations_opened + excluded.conversations_opened, \
         conversations_closed = daily_volume.conversations_closed + excluded.conversations_closed, \
         messages_in = daily_volume.messages_in + excluded.messages_in, \
         messages_out = daily_volume.messages_out + excluded.messages_out",
    )
    .bind(workspace_id)
    .bind(day)
    .bind(channel_id)
    .bind(counts.opened)
    .bind(counts.closed)
    .bind(counts.messages_in)
    .bind(counts.messages_out)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The workspace's rows of the query's days (and channel), by day then
/// channel.
pub(crate) async fn daily_volume(
    db: &Db,
    query: &VolumeQuery,
) -> Result<Vec<DayVolume>, StoreError> {
    let rows = sqlx::query(
        "SELECT day, channel_id, conversations_opened, conversations_closed, \
         messages_in, messages_out FROM daily_volume \
         WHERE workspace_id = $1 AND day >= $2 AND day <= $3 \
         AND ($4 = '' OR channel_id = $4) \
         ORDER BY day, channel_id",
    )
    .bind(&query.workspace_id)
    .bind(&query.days.first)
    .bind(&query.days.last)
    .bind(query.channel_id.as_deref().unwrap_or(""))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(volume_of).collect::<Result<_, _>>()?)
}

fn volume_of(row: &AnyRow) -> Result<DayVolume, sqlx::Error> {
    Ok(DayVolume {
        day: row.try_get("day")?,
        channel_id: row.try_get("channel_id")?,
        counts: Counts {
            opened: row.try_get("conversations_opened")?,
            closed: row.try_get("conversations_closed")?,
            messages_in: row.try_get("messages_in")?,
            messages_out: row.try_get("messages_out")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DaySpan, Milestone, MilestoneKind};
    use crate::{GROUP, MIGRATIONS};
    use telenet_store::testing::{Backend, TestDb};

    async fn fixture(backend: Backend) -> TestDb {
        backend.database("reporting", &MIGRATIONS).await
    }

    const OPENED: Counts = Counts::OPENED;
    const IN: Counts = Counts::MESSAGE_IN;
    const CLOSED: Counts = Counts::CLOSED;

    /// Conversation `id` of `ws` reaching `kind` on `day`.
    fn milestone(ws: &str, day: &str, id: &str, kind: MilestoneKind) -> Contribution {
        let counts = match kind {
            MilestoneKind::Opened => OPENED,
            MilestoneKind::Closed => CLOSED,
        };
        Contribution {
            milestone: Some(Milestone {
                conversation_id: id.into(),
                kind,
            }),
            ..adds(ws, day, "ch1", counts)
        }
    }

    fn adds(ws: &str, day: &str, channel: &str, counts: Counts) -> Contribution {
        Contribution {
            workspace_id: ws.into(),
            day: day.into(),
            channel_id: channel.into(),
            counts,
            milestone: None,
        }
    }

    fn query(ws: &str, first: &str, last: &str, channel: Option<&str>) -> VolumeQuery {
        VolumeQuery {
            workspace_id: ws.into(),
            days: DaySpan {
                first: first.into(),
                last: last.into(),
            },
            channel_id: channel.map(str::to_owned),
        }
    }

    /// (day, channel, opened, closed, in, out) of each row.
    async fn rows(db: &Db, query: &VolumeQuery) -> Vec<(String, String, [i64; 4])> {
        daily_volume(db, query)
            .await
            .expect("read")
            .into_iter()
            .map(|v| {
                let c = v.counts;
                (
                    v.day,
                    v.channel_id,
                    [c.opened, c.closed, c.messages_in, c.messages_out],
                )
            })
            .collect()
    }

    /// Count each of `events` once, as events `e0`, `e1`, ….
    async fn count_each(db: &Db, events: &[Contribution]) {
        for (i, event) in events.iter().enumerate() {
            let id = format!("e{i}");
            assert!(
                count_once(db, GROUP, &id, Some(event))
                    .await
                    .expect("count")
            );
        }
    }

    fn row(day: &str, channel: &str, counts: [i64; 4]) -> (String, String, [i64; 4]) {
        (day.into(), channel.into(), counts)
    }

    telenet_store::on_both_backends!(
        an_event_counts_once,
        events_of_one_day_and_channel_add_up,
        reads_keep_to_the_workspace_days_and_channel,
        a_conversation_opens_and_closes_once_whatever_reports_it,
    );

    async fn a_conversation_opens_and_closes_once_whatever_reports_it(backend: Backend) {
        use MilestoneKind::{Closed, Opened};
        let f = fixture(backend).await;
        let reports = [
            ("e1", milestone("ws", "2024-03-01", "c1", Opened)),
            ("e2", milestone("ws", "2024-03-01", "c1", Closed)),
            // Another close that raced the first, the next day.
            ("e3", milestone("ws", "2024-03-02", "c1", Closed)),
            // The same close published again under another id.
            ("e4", milestone("ws", "2024-03-01", "c1", Closed)),
            ("e5", milestone("ws", "2024-03-01", "c2", Closed)),
            // The same id in another workspace is another conversation.
            ("e6", milestone("other", "2024-03-01", "c1", Closed)),
        ];
        for (id, report) in &reports {
            // Each event is processed, counted or not.
            assert!(
                count_once(&f.db, GROUP, id, Some(report))
                    .await
                    .expect("count")
            );
        }
        assert!(
            !count_once(&f.db, GROUP, "e3", Some(&reports[2].1))
                .await
                .expect("count")
        );
        assert_eq!(
            rows(&f.db, &query("ws", "2024-03-01", "2024-03-02", None)).await,
            vec![row("2024-03-01", "ch1", [1, 2, 0, 0])]
        );
        assert_eq!(
            rows(&f.db, &query("other", "2024-03-01", "2024-03-02", None)).await,
            vec![row("2024-03-01", "ch1", [0, 1, 0, 0])]
        );
        f.db.close().await;
    }

    async fn an_event_counts_once(backend: Backend) {
        let f = fixture(backend).await;
        let opened = adds("ws", "2024-03-01", "ch1", OPENED);
        assert!(
            count_once(&f.db, GROUP, "e1", Some(&opened))
                .await
                .expect("count")
        );
        assert!(
            !count_once(&f.db, GROUP, "e1", Some(&opened))
                .await
                .expect("count")
        );
        // An event that counts nothing is remembered all the same.
        assert!(count_once(&f.db, GROUP, "e2", None).await.expect("count"));
        assert!(
            !count_once(&f.db, GROUP, "e2", Some(&opened))
                .await
                .expect("count")
        );
        // Another consumer group keeps its own record.
        assert!(count_once(&f.db, "other", "e1", None).await.expect("count"));
        assert_eq!(
            rows(&f.db, &query("ws", "2024-03-01", "2024-03-01", None)).await,
            vec![row("2024-03-01", "ch1", [1, 0, 0, 0])]
        );
        f.db.close().await;
    }

    async fn events_of_one_day_and_channel_add_up(backend: Backend) {
        let f = fixture(backend).await;
        let events = [
            adds("ws", "2024-03-01", "ch2", OPENED),
            adds("ws", "2024-03-01", "ch1", IN),
            adds("ws", "2024-03-01", "ch1", OPENED),
            adds("ws", "2024-03-01", "ch1", IN),
            adds("ws", "2024-02-29", "ch1", IN),
        ];
        count_each(&f.db, &events).await;
        assert_eq!(
            rows(&f.db, &query("ws", "2024-02-01", "2024-03-31", None)).await,
            vec![
                row("2024-02-29", "ch1", [0, 0, 1, 0]),
                row("2024-03-01", "ch1", [1, 0, 2, 0]),
                row("2024-03-01", "ch2", [1, 0, 0, 0]),
            ]
        );
        f.db.close().await;
    }

    async fn reads_keep_to_the_workspace_days_and_channel(backend: Backend) {
        let f = fixture(backend).await;
        let events = [
            adds("wsA", "2024-02-29", "ch1", OPENED),
            adds("wsA", "2024-03-01", "ch1", OPENED),
            adds("wsA", "2024-03-01", "ch2", IN),
            adds("wsA", "2024-03-02", "ch1", IN),
            adds("wsB", "2024-03-01", "ch1", IN),
        ];
        count_each(&f.db, &events).await;
        // Both ends of the span are included.
        assert_eq!(
            rows(&f.db, &query("wsA", "2024-03-01", "2024-03-01", None)).await,
            vec![
                row("2024-03-01", "ch1", [1, 0, 0, 0]),
                row("2024-03-01", "ch2", [0, 0, 1, 0]),
            ]
        );
        assert_eq!(
            rows(
                &f.db,
                &query("wsA", "2024-02-29", "2024-03-02", Some("ch1"))
            )
            .await,
            vec![
                row("2024-02-29", "ch1", [1, 0, 0, 0]),
                row("2024-03-01", "ch1", [1, 0, 0, 0]),
                row("2024-03-02", "ch1", [0, 0, 1, 0]),
            ]
        );
        assert_eq!(
            rows(&f.db, &query("wsB", "2024-01-01", "2024-12-31", None)).await,
            vec![row("2024-03-01", "ch1", [0, 0, 1, 0])]
        );
        assert!(
            rows(&f.db, &query("wsC", "2024-01-01", "2024-12-31", None))
                .await
                .is_empty()
        );
        f.db.close().await;
    }
}
