//! What the system shows: every conversation and its messages as agents see
//! them through the gateway, and dispatch's own record of its attempts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::Value;

use crate::load::{Api, Journal};

/// A message as the gateway lists it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub inbound: bool,
    pub external_id: String,
    pub status: String,
    /// When conversations stored it, in the run's seconds.
    pub created_at: f64,
}

/// A conversation with its messages in the order the gateway lists them
/// (the order agents read them in).
#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: String,
    pub opened_at: String,
    pub messages: Vec<Message>,
}

fn time_of(value: &Value, journal: &Journal) -> f64 {
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| journal.wall(SystemTime::from(t.with_timezone(&chrono::Utc))))
        .unwrap_or(f64::NAN)
}

/// Every conversation of the workspace with every message, oldest
/// conversation first; an error when any call fails (the caller retries).
pub async fn conversations(api: &Api, journal: &Journal) -> Result<Vec<Conversation>, String> {
    let mut out = Vec::new();
    for c in api.all_pages("/v1/conversations").await? {
        let id = c["id"].as_str().unwrap_or_default().to_owned();
        let messages = api
            .all_pages(&format!("/v1/conversations/{id}/messages"))
            .await?
            .into_iter()
            .map(|m| Message {
                id: m["id"].as_str().unwrap_or_default().to_owned(),
                inbound: m["direction"].as_str() == Some("inbound"),
                external_id: m["external_id"].as_str().unwrap_or_default().to_owned(),
                status: m["status"].as_str().unwrap_or_default().to_owned(),
                created_at: time_of(&m["created_at"], journal),
            })
            .collect();
        out.push(Conversation {
            id,
            opened_at: c["opened_at"].as_str().unwrap_or_default().to_owned(),
            messages,
        });
    }
    out.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// The same, retried through faults until `within` passes.
pub async fn conversations_retrying(
    api: &Api,
    journal: &Journal,
    within: Duration,
) -> anyhow::Result<Vec<Conversation>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match conversations(api, journal).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("listing conversations through the gateway: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Dispatch's record of one outbound message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub state: String,
    pub attempts: i64,
}

/// Every delivery dispatch recorded, by message id, read from dispatch's
/// own table (its attempt count is not in the REST API).
pub async fn deliveries(database_url: &str) -> anyhow::Result<BTreeMap<String, Delivery>> {
    use telenet_store::sqlx::{self, Connection as _, Row as _};
    let mut conn = sqlx::postgres::PgConnection::connect(database_url)
        .await
        .context("connecting to the suite's PostgreSQL")?;
    let rows = sqlx::query("SELECT message_id, state, attempts FROM dispatch.deliveries")
        .fetch_all(&mut conn)
        .await
        .context("reading dispatch.deliveries")?;
    let mut out = BTreeMap::new();
    for row in rows {
        out.insert(
            row.try_get::<String, _>("message_id")?,
            Delivery {
                state: row.try_get("state")?,
                attempts: row.try_get("attempts")?,
            },
        );
    }
    let _ = conn.close().await;
    Ok(out)
}

/// What reporting counted over the days around now (UTC), summed over
/// channels: conversations opened, messages in, messages out.
pub async fn reported(api: &Api) -> Result<(u64, u64, u64), String> {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Days::new(1), today + chrono::Days::new(1));
    let (status, report) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/reports/daily-volume?from={from}&to={to}"),
            None,
        )
        .await?;
    if status != 200 {
        return Err(format!("daily volume: {status} {report}"));
    }
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| rows.iter().filter_map(|r| r[field].as_u64()).sum::<u64>();
    Ok((
        sum("conversations_opened"),
        sum("messages_in"),
        sum("messages_out"),
    ))
}

/// What the conversations hold, counted the way reporting counts:
/// conversations, inbound messages, outbound messages.
pub fn held(conversations: &[Conversation]) -> (u64, u64, u64) {
    let messages = conversations.iter().flat_map(|c| c.messages.iter());
    let inbound = messages.clone().filter(|m| m.inbound).count() as u64;
    let outbound = messages.filter(|m| !m.inbound).count() as u64;
    (conversations.len() as u64, inbound, outbound)
}

/// The dead letters of every group with any, taken out of their queues:
/// one line each with the routing key, the attempts and the reason.
pub async fn dead_letters(amqp_url: &str, queues: &[(String, u64)]) -> Vec<String> {
    use telenet_bus::EventBus as _;
    let bus = match telenet_bus::rabbitmq::RabbitBus::connect(
        amqp_url,
        "",
        telenet_bus::RetryPolicy::default(),
    )
    .await
    {
        Ok(bus) => bus,
        Err(e) => return vec![format!("cannot read the dead letters: {e}")],
    };
    let mut out = Vec::new();
    for (queue, _) in queues {
        let Some(group) = queue.strip_suffix(".dlq") else {
            continue;
        };
        match bus.drain_dead_letters(group, 100).await {
            Ok(letters) => out.extend(letters.into_iter().map(|l| {
                format!(
                    "dead letter in {group}: {} {} after {} attempts: {}",
                    l.event.routing_key, l.event.id, l.attempts, l.reason
                )
            })),
            Err(e) => out.push(format!("cannot drain {queue}: {e}")),
        }
    }
    bus.close().await;
    out
}
