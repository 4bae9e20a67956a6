//! The in-process bus for the dev server and unit tests.
//!
//! It copies RabbitMQ's observable behaviour rather than inventing its own, so
//! code tested against it behaves the same in production (the conformance
//! suite holds both to that):
//!
//! - one topic "exchange": a published event is copied into the queue of every
//!   group with a matching binding; when no group matches, the publish fails
//!   with [`BusError::Unroutable`] (RabbitMQ's `mandatory` return) and
//!   nothing of the batch is enqueued;
//! - a group's queue exists from its first `declare` or `subscribe` for the
//!   life of the bus, and keeps events while nobody consumes; bindings only
//!   accumulate;
//! - members of a group share the queue round robin, each holding at most
//!   `prefetch` unsettled deliveries (0 means unlimited, as in AMQP);
//! - an unsettled delivery that is dropped goes back to where it was in the
//!   queue (ahead of everything enqueued after it, as RabbitMQ requeues), with
//!   its attempt unchanged; a retry comes back at the tail after the
//!   policy's delay; when the delays are used up it is dead-lettered;
//! - a broadcast subscriber has a queue of its own, like RabbitMQ's
//!   exclusive auto-delete queue: it is gone once its subscriber is (no
//!   events kept for it), and a retried or dead-lettered delivery is
//!   dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::{
    BusError, DeadLetter, DeadLetterFilter, Delivery, Event, EventBus, QueueDepth, RetryPolicy,
    Settle, SubscribeSpec, Subscription, check_event, check_spec, routing,
};

/// The in-memory event bus. Cloning it is cheap and clones share the queues.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

impl MemoryBus {
    pub fn new(retry: RetryPolicy) -> Self {
        Self {
            shared: Arc::new(Shared {
                retry,
                state: Mutex::new(State::default()),
            }),
        }
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("retry", &self.shared.retry)
            .finish_non_exhaustive()
    }
}

struct Shared {
    retry: RetryPolicy,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    next_member_id: u64,
}

/// One consumer group: the AMQP queue with its bindings, plus its dead letters.
#[derive(Default)]
struct Group {
    bindings: Vec<String>,
    ready: VecDeque<Queued>,
    dead: VecDeque<DeadLetter>,
    members: Vec<Member>,
    /// Where the round robin continues.
    next: usize,
    /// Order of enqueueing; `ready` is always sorted by it.
    next_seq: u64,
    /// One broadcast subscriber's own queue, deleted with it.
    broadcast: bool,
}

impl Group {
    fn bind(&mut self, patterns: &[String]) {
        for pattern in patterns {
            if !self.bindings.contains(pattern) {
                self.bindings.push(pattern.clone());
            }
        }
    }

    fn binds(&self, routing_key: &str) -> bool {
        self.bindings
            .iter()
            .any(|pattern| routing::matches(pattern, routing_key))
    }

    /// Takes out up to `limit` dead letters `select` picks, in order.
    fn take_dead(&mut self, select: DeadLetterFilter<'_>, limit: usize) -> Vec<DeadLetter> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.dead.len());
        for dead in self.dead.drain(..) {
            if taken.len() < limit && select(&dead) {
                taken.push(dead);
            } else {
                kept.push_back(dead);
            }
        }
        self.dead = kept;
        taken
    }

    /// A broadcast queue whose subscriber went away (an auto-delete queue
    /// the broker would have deleted).
    fn is_abandoned(&self) -> bool {
        self.broadcast && self.members.iter().all(|m| m.tx.is_closed())
    }

    fn enqueue(&mut self, event: Event, attempt: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back(Queued {
            seq,
            event,
            attempt,
        });
    }

    /// Puts a delivery back at its original place in the queue.
    fn requeue(&mut self, queued: Queued) {
        let at = self.ready.partition_point(|q| q.seq < queued.seq);
        self.ready.insert(at, queued);
    }
}

struct Queued {
    seq: u64,
    event: Event,
    attempt: u32,
}

/// One subscriber of a group.
struct Member {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    /// Effective limit; the channel holds exactly this many, so a send to a
    /// member with room never finds the channel full.
    prefetch: usize,
    unacked: usize,
}

impl Member {
    fn has_room(&self) -> bool {
        self.unacked < self.prefetch && !self.tx.is_closed()
    }
}

/// Values that must be dropped only after the state lock is released: dropping
/// the last sender of a channel may drop deliveries still inside it, and
/// dropping a delivery requeues it, which takes the lock again.
type Garbage = Vec<Member>;

impl Shared {
    fn with_state<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Self>, &mut State, &mut Garbage) -> R,
    ) -> R {
        let mut garbage = Vec::new();
        let result = {
            // A panic while holding the lock cannot leave the queues half
            // updated in a way later calls would trip over, so keep serving.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            f(self, &mut state, &mut garbage)
        };
        drop(garbage);
        result
    }

    /// Settles one delivery: frees its prefetch slot, applies `then` to the
    /// group, and hands out whatever the freed slot allows.
    fn settle(self: &Arc<Self>, group: &str, member: u64, then: impl FnOnce(&mut Group)) {
        self.with_state(|shared, state, garbage| {
            let Some(g) = state.groups.get_mut(group) else {
                return;
            };
            if let Some(m) = g.members.iter_mut().find(|m| m.id == member) {
                m.unacked = m.unacked.saturating_sub(1);
            }
            then(g);
            dispatch(shared, group, g, garbage);
        });
    }
}

/// Hands queued events to members with room, round robin, until either runs out.
fn dispatch(shared: &Arc<Shared>, name: &str, group: &mut Group, garbage: &mut Garbage) {
    let mut i = 0;
    while i < group.members.len() {
        if group.members[i].tx.is_closed() {
            garbage.push(group.members.remove(i));
        } else {
            i += 1;
        }
    }
    while let Some(queued) = group.ready.pop_front() {
        let count = group.members.len();
        let Some(index) = (0..count)
            .map(|k| (group.next + k) % count)
            .find(|&i| group.members[i].has_room())
        else {
            group.ready.push_front(queued);
            return;
        };
        group.next = (index + 1) % count;
        let queued_seq = queued.seq;
        let member = &mut group.members[index];
        let delivery = Delivery::new(
            queued.event.clone(),
            queued.attempt,
            Box::new(MemorySettle {
                shared: Arc::clone(shared),
                group: name.to_owned(),
                member: member.id,
                seq: queued.seq,
                event: queued.event,
                attempt: queued.attempt,
            }),
        );
        match member.tx.try_send(delivery) {
            Ok(()) => member.unacked += 1,
            Err(err) => {
                let closed = matches!(err, TrySendError::Closed(_));
                let mut delivery = err.into_inner();
                // Take it back without the drop-requeue, which would re-enter the lock.
                delivery.disarm();
                group.requeue(Queued {
                    seq: queued_seq,
                    event: delivery.event.clone(),
                    attempt: delivery.attempt,
                });
                if closed {
                    garbage.push(group.members.remove(index));
                } else {
                    // Cannot happen (capacity == prefetch); stop rather than spin.
                    return;
                }
            }
        }
    }
}

/// Deletes the broadcast queues whose subscriber went away, with what
/// they held.
fn drop_abandoned(state: &mut State, garbage: &mut Garbage) {
    let abandoned: Vec<String> = state
        .groups
        .iter()
        .filter(|(_, g)| g.is_abandoned())
        .map(|(name, _)| name.clone())
        .collect();
    for name in abandoned {
        if let Some(group) = state.groups.remove(&name) {
            garbage.extend(group.members);
        }
    }
}

struct MemorySettle {
    shared: Arc<Shared>,
    group: String,
    member: u64,
    seq: u64,
    event: Event,
    attempt: u32,
}

impl MemorySettle {
    /// Whether the delivery came from a broadcast queue (or one that is gone).
    fn is_broadcast(&self) -> bool {
        self.shared
            .with_state(|_, state, _| state.groups.get(&self.group).is_none_or(|g| g.broadcast))
    }

    fn into_dead_letter(self, reason: &str) {
        if self.is_broadcast() {
            self.shared.settle(&self.group, self.member, |_| {});
            return;
        }
        let dead = DeadLetter {
            event: self.event,
            reason: reason.to_owned(),
            attempts: self.attempt,
        };
        self.shared
            .settle(&self.group, self.member, |g| g.dead.push_back(dead));
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.shared.settle(&self.group, self.member, |_| {});
        Ok(())
    }

    async fn retry(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        if self.is_broadcast() {
            self.into_dead_letter(reason);
            return Ok(());
        }
        let step = usize::try_from(self.attempt.max(1) - 1).unwrap_or(usize::MAX);
        let Some(delay) = self.shared.retry.delays.get(step).copied() else {
            self.into_dead_letter(reason);
            return Ok(());
        };
        let MemorySettle {
            shared,
            group,
            member,
            event,
            attempt,
            ..
        } = *self;
        shared.settle(&group, member, |_| {});
        // Like the RabbitMQ retry queue, the event waits outside the group's
        // queue and then joins its tail.
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shared.with_state(|shared, state, garbage| {
                if let Some(g) = state.groups.get_mut(&group) {
                    g.enqueue(event, attempt.saturating_add(1));
                    dispatch(shared, &group, g, garbage);
                }
            });
        });
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), BusError> {
        self.into_dead_letter(reason);
        Ok(())
    }

    fn requeue(self: Box<Self>) {
        let MemorySettle {
            shared,
            group,
            member,
            seq,
            event,
            attempt,
        } = *self;
        shared.settle(&group, member, |g| {
            g.requeue(Queued {
                seq,
                event,
                attempt,
            });
        });
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[Event]) -> Result<(), BusError> {
        // All or nothing, like a batch whose every publish must be confirmed.
        for event in events {
            check_event(event)?;
        }
        self.shared.with_state(|shared, state, garbage| {
            drop_abandoned(state, garbage);
            // As RabbitMQ returns a mandatory message no queue took.
            if let Some(lost) = events
                .iter()
                .find(|e| !state.groups.values().any(|g| g.binds(&e.routing_key)))
            {
                return Err(BusError::Unroutable {
                    routing_key: lost.routing_key.clone(),
                });
            }
            let mut touched = 0usize;
            for (name, group) in state.groups.iter_mut() {
                let mut any = false;
                for event in events {
                    if group.binds(&event.routing_key) {
                        group.enqueue(event.clone(), 1);
                        any = true;
                    }
                }
                if any {
                    dispatch(shared, name, group, garbage);
                    touched += 1;
                }
            }
            tracing::trace!(events = events.len(), groups = touched, "published");
            Ok(())
        })
    }

    async fn declare(&self, specs: &[SubscribeSpec]) -> Result<(), BusError> {
        for spec in specs {
            check_spec(spec)?;
        }
        self.shared.with_state(|_, state, _| {
            for spec in specs {
                state
                    .groups
                    .entry(spec.group.clone())
                    .or_default()
                    .bind(&spec.bindings);
            }
        });
        Ok(())
    }

    fn known_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .shared
            .with_state(|_, state, _| state.groups.keys().cloned().collect());
        groups.sort();
        groups
    }

    async fn list_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.shared.with_state(|_, state, _| {
            state
                .groups
                .get(group)
                .map(|g| {
                    g.dead
                        .iter()
                        .filter(|d| select(d))
                        .take(limit)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn redrive_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.shared.with_state(|shared, state, garbage| {
            let Some(g) = state.groups.get_mut(group) else {
                return Vec::new();
            };
            let moved = g.take_dead(select, limit);
            for dead in &moved {
                g.enqueue(dead.event.clone(), 1);
            }
            dispatch(shared, group, g, garbage);
            moved
        }))
    }

    async fn discard_dead_letters(
        &self,
        group: &str,
        select: DeadLetterFilter<'_>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.shared.with_state(|_, state, _| {
            state
                .groups
                .get_mut(group)
                .map(|g| g.take_dead(select, limit))
                .unwrap_or_default()
        }))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Subscription, BusError> {
        check_spec(&spec)?;
        let prefetch = match spec.prefetch {
            0 => usize::from(u16::MAX),
            n => usize::from(n),
        };
        let (tx, rx) = mpsc::channel(prefetch);
        self.shared.with_state(|shared, state, garbage| {
            drop_abandoned(state, garbage);
            let id = state.next_member_id;
            state.next_member_id += 1;
            // A broadcast subscriber's own queue, under a name no group
            // can have (group names never hold a NUL).
            let name = if spec.broadcast {
                format!("{}\0{id}", spec.group)
            } else {
                spec.group.clone()
            };
            let group = state.groups.entry(name.clone()).or_default();
            group.broadcast = spec.broadcast;
            group.bind(&spec.bindings);
            group.members.push(Member {
                id,
                tx,
                prefetch,
                unacked: 0,
            });
            dispatch(shared, &name, group, garbage);
        });
        Ok(Subscription::from_receiver(rx))
    }

    async fn drain_dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.shared.with_state(|_, state, _| {
            state
                .groups
                .get_mut(group)
                .map(|g| {
                    let n = limit.min(g.dead.len());
                    g.dead.drain(..n).collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn queue_depth(&self, group: &str) -> Result<QueueDepth, BusError> {
        Ok(self.shared.with_state(|_, state, _| {
            state
                .groups
                .get(group)
                .map(|g| QueueDepth {
                    ready: g.ready.len() as u64,
                    dead_letters: g.dead.len() as u64,
                })
                .unwrap_or_default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bus() -> MemoryBus {
        MemoryBus::new(RetryPolicy {
            delays: vec![Duration::from_millis(20)],
        })
    }

    #[tokio::test]
    async fn dropping_a_subscription_returns_its_buffered_deliveries() {
        let bus = bus();
        let first = bus
            .subscribe(SubscribeSpec::new("g", &["k"]))
            .await
            .expect("subscribe");
        bus.publish(&[Event::new("k", "a"), Event::new("k", "b")])
            .await
            .expect("publish");
        drop(first);
        let mut second = bus
            .subscribe(SubscribeSpec::new("g", &["k"]))
            .await
            .expect("subscribe");
        let a = second.next().await.expect("a");
        let b = second.next().await.expect("b");
        assert_eq!(a.event.payload, "a");
        assert_eq!(b.event.payload, "b");
        assert_eq!((a.attempt, b.attempt), (1, 1));
    }

    #[tokio::test]
    async fn reserved_headers_are_refused() {
        let bus = bus();
        let mut event = Event::new("k", "a");
        event.headers.insert("x-telenet-attempt".into(), "7".into());
        assert!(matches!(
            bus.publish(&[event]).await,
            Err(BusError::Config(_))
        ));
    }

    #[tokio::test]
    async fn retry_after_subscription_dropped_still_comes_back() {
        let bus = bus();
        let mut sub = bus
            .subscribe(SubscribeSpec::new("g", &["k"]))
            .await
            .expect("subscribe");
        bus.publish(&[Event::new("k", "a")]).await.expect("publish");
        let d = sub.next().await.expect("delivery");
        drop(sub);
        d.retry("later").await.expect("retry");
        let mut again = bus
            .subscribe(SubscribeSpec::new("g", &[]))
            .await
            .expect("subscribe");
        let d = again.next().await.expect("redelivery");
        assert_eq!(d.attempt, 2);
    }
}
