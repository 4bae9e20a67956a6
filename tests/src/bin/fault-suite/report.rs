//! The verdict: what became of every accepted webhook and every stored
//! reply, per phase, and the table.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::faults::Phase;
use crate::load::{AcceptedReply, AcceptedWebhook, Kind, Post, Request, parse_external_id};
use crate::observe::{Conversation, Delivery};

/// A webhook is served normally when its message is in its conversation
/// within this many seconds of its 2xx; later counts as disruption.
const NORMAL_LATENCY: f64 = 3.0;

/// Everything observed, for [`evaluate`].
pub struct Observed<'a> {
    pub requests: &'a [Request],
    pub webhooks: &'a [AcceptedWebhook],
    pub replies: &'a [AcceptedReply],
    pub conversations: &'a [Conversation],
    pub posts: &'a BTreeMap<String, Vec<Post>>,
    pub deliveries: &'a BTreeMap<String, Delivery>,
}

/// One line of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub fault: String,
    pub webhooks_sent: usize,
    pub accepted: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub replies: usize,
    pub replies_sent: usize,
    pub replies_failed: usize,
    /// Receiver got a reply more times than dispatch made attempts.
    pub over_sent: usize,
    /// Neither sent nor failed at the end.
    pub unsettled: usize,
    /// Slowest reply, from its 201 to the receiver's 200 (seconds).
    pub slowest_reply: Option<f64>,
    /// From the fault until every request succeeds again and every webhook
    /// reaches its conversation in time (seconds); `None`: no disruption.
    pub recovery: Option<f64>,
}

impl Row {
    pub fn failed(&self) -> bool {
        self.lost + self.duplicated + self.out_of_order + self.over_sent + self.unsettled > 0
    }
}

/// Where each accepted webhook's message ended up.
struct Placement {
    /// How many times it is in a conversation.
    count: usize,
    /// When conversations stored it first (run seconds).
    stored_at: f64,
    /// Listed after a later message of the same contact.
    out_of_order: bool,
}

fn placements(conversations: &[Conversation]) -> (HashMap<String, Placement>, Vec<String>) {
    let mut by_id: HashMap<String, Placement> = HashMap::new();
    let mut findings = Vec::new();
    let mut highest: HashMap<usize, (u64, String)> = HashMap::new();
    for conversation in conversations {
        for m in conversation.messages.iter().filter(|m| m.inbound) {
            let entry = by_id.entry(m.external_id.clone()).or_insert(Placement {
                count: 0,
                stored_at: m.created_at,
                out_of_order: false,
            });
            entry.count += 1;
            if entry.count > 1 {
                continue;
            }
            let Some((contact, seq)) = parse_external_id(&m.external_id) else {
                continue;
            };
            match highest.get(&contact) {
                Some((top, top_id)) if *top > seq => {
                    entry.out_of_order = true;
                    findings.push(format!(
                        "out of order: {} is listed after {top_id} (conversation {})",
                        m.external_id, conversation.id
                    ));
                }
                _ => {
                    highest.insert(contact, (seq, m.external_id.clone()));
                }
            }
        }
    }
    (by_id, findings)
}

fn in_window(at: f64, phase: &Phase) -> bool {
    at >= phase.start && at < phase.end
}

/// The table's rows and every finding (one line each).
pub fn evaluate(phases: &[Phase], seen: &Observed<'_>) -> (Vec<Row>, Vec<String>) {
    let (placed, mut findings) = placements(seen.conversations);
    let outbound: HashMap<&str, &str> = seen
        .conversations
        .iter()
        .flat_map(|c| c.messages.iter())
        .filter(|m| !m.inbound)
        .map(|m| (m.id.as_str(), m.status.as_str()))
        .collect();
    let mut rows = Vec::new();
    for phase in phases {
        let mut row = Row {
            fault: phase.fault.title(),
            ..Row::default()
        };
        row.webhooks_sent = seen
            .requests
            .iter()
            .filter(|r| r.kind == Kind::Webhook && in_window(r.at, phase))
            .count();
        // Disruption after the fault: failed requests, and accepted
        // webhooks late to (or missing from) their conversation.
        let mut bad: Vec<f64> = seen
            .requests
            .iter()
            .filter(|r| !r.ok && r.at >= phase.injected && r.at < phase.end)
            .map(|r| r.at)
            .collect();
        let mut good: Vec<f64> = seen
            .requests
            .iter()
            .filter(|r| r.ok && r.kind != Kind::Webhook)
            .filter(|r| r.at >= phase.injected && r.at < phase.end)
            .map(|r| r.at)
            .collect();
        for w in seen.webhooks.iter().filter(|w| in_window(w.at, phase)) {
            row.accepted += 1;
            let placement = placed.get(&w.external_id);
            match placement {
                None => {
                    row.lost += 1;
                    findings.push(format!(
                        "lost: webhook {} (2xx at {:.1} s, phase \"{}\") is in no conversation",
                        w.external_id, w.at, row.fault
                    ));
                }
                Some(p) => {
                    if p.count > 1 {
                        row.duplicated += 1;
                        findings.push(format!(
                            "duplicated: webhook {} (2xx at {:.1} s, phase \"{}\") is in conversations {} times",
                            w.external_id, w.at, row.fault, p.count
                        ));
                    }
                    if p.out_of_order {
                        row.out_of_order += 1;
                    }
                }
            }
            if w.at >= phase.injected {
                let late = placement.is_none_or(|p| p.stored_at - w.at > NORMAL_LATENCY);
                if late {
                    bad.push(w.at)
                } else {
                    good.push(w.at)
                }
            }
        }
        row.recovery = recovery(phase.injected, &bad, &good);
        for r in seen.replies.iter().filter(|r| in_window(r.at, phase)) {
            row.replies += 1;
            let posts = seen
                .posts
                .get(&r.message_id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let attempts = seen.deliveries.get(&r.message_id).map_or(0, |d| d.attempts);
            let status = outbound
                .get(r.message_id.as_str())
                .copied()
                .unwrap_or("missing");
            if i64::try_from(posts.len()).unwrap_or(i64::MAX) > attempts {
                row.over_sent += 1;
                findings.push(format!(
                    "sent more than once per attempt: reply r-{} ({}) reached the receiver {} times in {} recorded attempts (phase \"{}\")",
                    r.n, r.message_id, posts.len(), attempts, row.fault
                ));
            }
            let delivered = posts.iter().find(|p| (200..300).contains(&p.status));
            match status {
                "sent" | "delivered" | "read" => {
                    row.replies_sent += 1;
                    if delivered.is_none() {
                        findings.push(format!(
                            "sent but never received: reply r-{} ({}) (phase \"{}\")",
                            r.n, r.message_id, row.fault
                        ));
                        row.unsettled += 1;
                    }
                }
                "failed" => row.replies_failed += 1,
                other => {
                    row.unsettled += 1;
                    let dispatch = seen
                        .deliveries
                        .get(&r.message_id)
                        .map_or("no delivery".to_owned(), |d| {
                            format!("dispatch: {} after {} attempts", d.state, d.attempts)
                        });
                    findings.push(format!(
                        "unsettled: reply r-{} ({}) is {other} at the end ({dispatch}; receiver got it {} times; phase \"{}\")",
                        r.n, r.message_id, posts.len(), row.fault
                    ));
                }
            }
            if let Some(p) = delivered {
                let delay = p.at - r.at;
                row.slowest_reply = Some(row.slowest_reply.map_or(delay, |s: f64| s.max(delay)));
            }
        }
        rows.push(row);
    }
    (rows, findings)
}

/// From `injected` to the first success after the last disruption.
fn recovery(injected: f64, bad: &[f64], good: &[f64]) -> Option<f64> {
    let last_bad = bad.iter().copied().fold(f64::NAN, f64::max);
    if last_bad.is_nan() {
        return None;
    }
    let first_good = good
        .iter()
        .copied()
        .filter(|g| *g > last_bad)
        .fold(f64::NAN, f64::min);
    Some(
        if first_good.is_nan() {
            last_bad
        } else {
            first_good
        } - injected,
    )
}

/// The table in Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| fault | webhooks sent | accepted | lost | duplicated | out of order | replies | sent / failed | over-sent | unsettled | slowest reply | recovery |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let secs = |s: Option<f64>| s.map_or("—".to_owned(), |s| format!("{s:.1} s"));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            r.fault,
            r.webhooks_sent,
            r.accepted,
            r.lost,
            r.duplicated,
            r.out_of_order,
            r.replies,
            r.replies_sent,
            r.replies_failed,
            r.over_sent,
            r.unsettled,
            secs(r.slowest_reply),
            secs(r.recovery),
        );
    }
    let total = |f: fn(&Row) -> usize| rows.iter().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "| **total** | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | | |",
        total(|r| r.webhooks_sent),
        total(|r| r.accepted),
        total(|r| r.lost),
        total(|r| r.duplicated),
        total(|r| r.out_of_order),
        total(|r| r.replies),
        total(|r| r.replies_sent),
        total(|r| r.replies_failed),
        total(|r| r.over_sent),
        total(|r| r.unsettled),
    );
    out
}
