//! The verdict: what became of every accepted webhook and every stored
//! reply, per phase, and the table.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::faults::Phase;
use crate::load::{AcceptedReply, AcceptedWebhook, Kind, Post, Request, parse_external_id};
use crate::observe::{Conversation, Delivery};

/// A request is served normally when it is answered within this many
/// seconds, and a webhook when its message is in its conversation within
/// as many seconds of its 2xx; later counts as disruption.
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

/// What the run shows without being wrong: replies the channel took more
/// than once, each time within its own attempt (a process died between
/// the channel's 2xx and the record of it, and the attempt after it sent
/// again; the receiver drops the copy by its `webhook-id`).
pub fn notes(phases: &[Phase], seen: &Observed<'_>) -> Vec<String> {
    let mut notes = Vec::new();
    for r in seen.replies {
        let posts = seen
            .posts
            .get(&r.message_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let taken = posts
            .iter()
            .filter(|p| (200..300).contains(&p.status))
            .count();
        if taken < 2 {
            continue;
        }
        let attempts = seen.deliveries.get(&r.message_id).map_or(0, |d| d.attempts);
        let phase = phases
            .iter()
            .find(|p| in_window(r.at, p))
            .map_or_else(String::new, |p| p.fault.title());
        notes.push(format!(
            "reply r-{} was taken by the channel {taken} times in {attempts} attempts (phase \"{phase}\")",
            r.n
        ));
    }
    notes
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
        // Disruption after the fault, per kind of request: requests in
        // flight when it struck or sent after it that failed or were slow
        // (disrupted until their answer came), and accepted webhooks late
        // to their conversation (until they reached it) or missing.
        let mut disruption = Disruption::default();
        for r in seen
            .requests
            .iter()
            .filter(|r| r.at + r.took >= phase.injected && r.at < phase.end)
        {
            if !r.ok || r.took > NORMAL_LATENCY {
                disruption.bad(r.kind, r.at + r.took);
            } else if r.kind != Kind::Webhook {
                // A webhook is served when its message is stored (below).
                disruption.good(r.kind, r.at);
            }
        }
        for w in seen.webhooks.iter().filter(|w| in_window(w.sent_at, phase)) {
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
                match placement {
                    Some(p) if p.stored_at - w.sent_at <= NORMAL_LATENCY => {
                        disruption.good(Kind::Webhook, w.sent_at);
                    }
                    Some(p) => disruption.bad(Kind::Webhook, p.stored_at),
                    None => disruption.bad(Kind::Webhook, phase.end),
                }
            }
        }
        row.recovery = disruption.recovery(phase.injected);
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

/// When each kind of request was disrupted and when it was served.
#[derive(Default)]
struct Disruption {
    /// Per kind: the moments it was disrupted until, and served at.
    kinds: Vec<(Kind, Vec<f64>, Vec<f64>)>,
}

impl Disruption {
    fn entry(&mut self, kind: Kind) -> &mut (Kind, Vec<f64>, Vec<f64>) {
        let i = match self.kinds.iter().position(|(k, _, _)| *k == kind) {
            Some(i) => i,
            None => {
                self.kinds.push((kind, Vec::new(), Vec::new()));
                self.kinds.len() - 1
            }
        };
        &mut self.kinds[i]
    }

    fn bad(&mut self, kind: Kind, until: f64) {
        self.entry(kind).1.push(until);
    }

    fn good(&mut self, kind: Kind, at: f64) {
        self.entry(kind).2.push(at);
    }

    /// From `injected` until every kind was served again: for each, the
    /// first success after its last disruption (or that disruption's end
    /// when nothing came after it); `None` when nothing was disrupted.
    fn recovery(&self, injected: f64) -> Option<f64> {
        self.kinds
            .iter()
            .filter_map(|(_, bad, good)| {
                let last_bad = bad.iter().copied().reduce(f64::max)?;
                let first_good = good
                    .iter()
                    .copied()
                    .filter(|g| *g > last_bad)
                    .reduce(f64::min);
                Some(first_good.unwrap_or(last_bad) - injected)
            })
            .reduce(f64::max)
    }
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
