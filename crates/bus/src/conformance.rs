//! The contract of [`EventBus`](crate::EventBus), as checks every implementation must pass.
//!
//! `tests/conformance.rs` runs [`run_all`] against the in-memory bus and
//! against a real RabbitMQ; a new implementation gets the same call. The
//! checks observe only what a service can observe (deliveries, attempts, dead
//! letters, timing), so the two buses are held to the same behaviour, not the
//! same internals.
//!
//! Every case gets a fresh bus from the factory and its own group names, so
//! cases and concurrent test runs never see each other's events. To prove
//! that nothing *else* arrives without sleeping on it, most cases publish a
//! "sentinel" event last and read up to it: queues are FIFO for one publisher.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::{
    BusError, DeadLetter, Delivery, Event, QueueDepth, RetryPolicy, SharedBus, SubscribeSpec,
    Subscription, all_dead_letters,
};

/// Short delays, so the retry cases take well under a second.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        delays: vec![RETRY_1, RETRY_2],
    }
}

const RETRY_1: Duration = Duration::from_millis(100);
const RETRY_2: Duration = Duration::from_millis(200);
/// Timers may fire a hair early relative to our clock reads.
const TIMER_SLACK: Duration = Duration::from_millis(10);
/// How long to wait for a delivery that must come.
const ARRIVAL: Duration = Duration::from_secs(10);
/// How long to watch for a delivery that must not come.
const QUIET: Duration = Duration::from_millis(400);
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

type Case = fn(SharedBus) -> BoxFuture<'static, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|bus| $name(bus).boxed()) as Case)),*]
    };
}

fn all_cases() -> Vec<(&'static str, Case)> {
    cases![
        routing_with_star_and_hash,
        unroutable_events_are_refused,
        declare_keeps_events_before_any_consumer,
        dead_letters_are_listed_without_taking_them,
        redrive_returns_dead_letters_as_first_deliveries,
        discard_deletes_only_the_chosen_dead_letters,
        every_group_gets_each_event,
        members_of_a_group_share_its_queue,
        bindings_accumulate,
        ack_removes_the_event,
        dropped_delivery_is_redelivered_in_place,
        delivery_outlives_its_subscription,
        dropped_subscription_returns_its_deliveries_in_order,
        retry_waits_and_counts_attempts_then_dead_letters,
        dead_letter_goes_straight_to_the_dead_letter_queue,
        drain_respects_the_limit,
        prefetch_bounds_unsettled_deliveries,
        queue_keeps_events_while_nobody_consumes,
        ids_headers_and_payload_are_preserved,
        concurrent_publishers,
        empty_publish_and_ping,
        unknown_group_has_no_dead_letters,
        invalid_input_is_a_config_error,
        queue_depth_counts_waiting_and_dead_letters,
        broadcast_subscribers_each_get_every_event,
        a_broadcast_queue_goes_with_its_subscriber,
        broadcast_retry_and_dead_letter_drop_the_event,
    ]
}

/// Names of every case, e.g. for listing.
pub fn case_names() -> Vec<&'static str> {
    all_cases().into_iter().map(|(name, _)| name).collect()
}

/// Runs every case, each on a fresh bus from `make` (called with
/// [`retry_policy`]), and reports all failures at once.
pub async fn run_all<F, Fut>(make: F) -> Result<(), String>
where
    F: Fn(RetryPolicy) -> Fut,
    Fut: Future<Output = SharedBus>,
{
    let mut failures = Vec::new();
    for (name, case) in all_cases() {
        let started = Instant::now();
        let bus = make(retry_policy()).await;
        let outcome =
            tokio::time::timeout(CASE_TIMEOUT, AssertUnwindSafe(case(bus)).catch_unwind()).await;
        let verdict = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(panic)) => Some(panic_message(panic.as_ref())),
            Err(_) => Some(format!("did not finish within {CASE_TIMEOUT:?}")),
        };
        match verdict {
            None => eprintln!("conformance: {name} ok ({:?})", started.elapsed()),
            Some(why) => {
                eprintln!("conformance: {name} FAILED: {why}");
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} conformance case(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_owned()
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// A group name no other case or test run uses.
fn group(label: &str) -> String {
    format!("conf-{label}-{}", uuid::Uuid::new_v4().simple())
}

fn event(routing_key: &str, payload: &str) -> Event {
    Event::new(routing_key, payload.to_owned())
}

async fn subscribe(bus: &SharedBus, group: &str, bindings: &[&str], prefetch: u16) -> Subscription {
    let mut spec = SubscribeSpec::new(group, bindings);
    spec.prefetch = prefetch;
    match bus.subscribe(spec).await {
        Ok(sub) => sub,
        Err(err) => panic!("subscribe {group} {bindings:?}: {err}"),
    }
}

async fn publish(bus: &SharedBus, events: &[Event]) {
    if let Err(err) = bus.publish(events).await {
        panic!("publish: {err}");
    }
}

async fn next(sub: &mut Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(ARRIVAL, sub.next()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing arrived within {ARRIVAL:?}"),
    }
}

async fn nothing_arrives(sub: &mut Subscription, what: &str) {
    if let Ok(Some(delivery)) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!(
            "{what}: unexpected delivery of {} (attempt {})",
            delivery.event.routing_key, delivery.attempt
        );
    }
}

async fn ack(delivery: Delivery) {
    if let Err(err) = delivery.ack().await {
        panic!("ack: {err}");
    }
}

async fn drain(bus: &SharedBus, group: &str, limit: usize) -> Vec<DeadLetter> {
    match bus.drain_dead_letters(group, limit).await {
        Ok(dead) => dead,
        Err(err) => panic!("drain dead letters of {group}: {err}"),
    }
}

/// Acks everything up to the sentinel and returns the routing keys before it.
async fn keys_until(sub: &mut Subscription, sentinel: &Event, what: &str) -> Vec<String> {
    let mut keys = Vec::new();
    loop {
        let delivery = next(sub, what).await;
        let is_sentinel = delivery.event.id == sentinel.id;
        if !is_sentinel {
            keys.push(delivery.event.routing_key.clone());
        }
        ack(delivery).await;
        if is_sentinel {
            return keys;
        }
    }
}

// ---------------------------------------------------------------------------
// Cases

async fn routing_with_star_and_hash(bus: SharedBus) {
    let patterns = [
        "orders.*",
        "orders.#",
        "*.paid.#",
        "orders.created",
        "#",
        "#.eu",
    ];
    let mut subs = Vec::new();
    for pattern in patterns {
        let g = group("routing");
        subs.push((
            pattern,
            subscribe(&bus, &g, &[pattern, "sentinel"], 64).await,
        ));
    }
    let keys = [
        "orders",
        "orders.created",
        "orders.created.eu",
        "refunds.paid",
        "refunds.paid.eu.late",
        "other",
    ];
    let events: Vec<Event> = keys.iter().map(|k| event(k, "x")).collect();
    publish(&bus, &events).await;
    let sentinel = event("sentinel", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;

    let expected: BTreeMap<&str, Vec<&str>> = [
        ("orders.*", vec!["orders.created"]),
        (
            "orders.#",
            vec!["orders", "orders.created", "orders.created.eu"],
        ),
        ("*.paid.#", vec!["refunds.paid", "refunds.paid.eu.late"]),
        ("orders.created", vec!["orders.created"]),
        ("#", keys.to_vec()),
        ("#.eu", vec!["orders.created.eu"]),
    ]
    .into_iter()
    .collect();
    for (pattern, sub) in &mut subs {
        let got = keys_until(sub, &sentinel, pattern).await;
        assert_eq!(got, expected[pattern], "pattern {pattern}");
    }
}

async fn unroutable_events_are_refused(bus: SharedBus) {
    // Published before any queue is bound to it: the broker would drop it,
    // so the publisher must hear that it was not stored.
    let outcome = bus.publish(&[event("lost.event", "x")]).await;
    assert!(
        matches!(&outcome, Err(BusError::Unroutable { routing_key }) if routing_key == "lost.event"),
        "publish with no queue bound: {outcome:?}"
    );
    let g = group("unroutable");
    let mut sub = subscribe(&bus, &g, &["lost.#"], 64).await;
    let outcome = bus.publish(&[event("nobody.listens", "x")]).await;
    assert!(
        matches!(&outcome, Err(BusError::Unroutable { routing_key }) if routing_key == "nobody.listens"),
        "publish of a key no group binds: {outcome:?}"
    );
    let sentinel = event("lost.sentinel", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;
    let before = keys_until(&mut sub, &sentinel, "unroutable").await;
    assert!(before.is_empty(), "received {before:?}");
}

async fn declare_keeps_events_before_any_consumer(bus: SharedBus) {
    let g = group("declared");
    let other = group("declared-other");
    let specs = [
        SubscribeSpec::new(&g, &["decl.#"]),
        SubscribeSpec::new(&other, &["decl.other"]),
    ];
    for round in ["first", "again (idempotent)"] {
        if let Err(err) = bus.declare(&specs).await {
            panic!("declare, {round}: {err}");
        }
    }
    let kept = event("decl.kept", "x");
    publish(&bus, std::slice::from_ref(&kept)).await;
    depth_becomes(
        &bus,
        &g,
        QueueDepth {
            ready: 1,
            dead_letters: 0,
        },
        "declared, never consumed",
    )
    .await;
    let mut sub = subscribe(&bus, &g, &["decl.#"], 64).await;
    let d = next(&mut sub, "event published before the first subscriber").await;
    assert_eq!(d.event, kept);
    assert_eq!(d.attempt, 1);
    ack(d).await;
    let outcome = bus.declare(&[SubscribeSpec::new("", &["a"])]).await;
    assert!(
        matches!(outcome, Err(BusError::Config(_))),
        "declaring an unnamed group: {outcome:?}"
    );
}

/// Subscribes `group` on `key.#`, publishes `n` events and dead-letters
/// each with reason `bad <i>`; returns the subscription and the events.
async fn dead_lettered(
    bus: &SharedBus,
    group: &str,
    key: &str,
    n: usize,
) -> (Subscription, Vec<Event>) {
    let mut sub = subscribe(bus, group, &[&format!("{key}.#")], 64).await;
    let events: Vec<Event> = (0..n)
        .map(|i| event(&format!("{key}.e"), &i.to_string()))
        .collect();
    publish(bus, &events).await;
    for i in 0..n {
        let d = next(&mut sub, "delivery to dead-letter").await;
        if let Err(err) = d.dead_letter(&format!("bad {i}")).await {
            panic!("dead_letter: {err}");
        }
    }
    (sub, events)
}

fn ids(dead: &[DeadLetter]) -> Vec<String> {
    dead.iter().map(|d| d.event.id.clone()).collect()
}

fn ids_of(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

async fn list(
    bus: &SharedBus,
    group: &str,
    select: crate::DeadLetterFilter<'_>,
    limit: usize,
) -> Vec<DeadLetter> {
    match bus.list_dead_letters(group, select, limit).await {
        Ok(dead) => dead,
        Err(err) => panic!("list dead letters of {group}: {err}"),
    }
}

async fn dead_letters_are_listed_without_taking_them(bus: SharedBus) {
    let g = group("list");
    let (_sub, events) = dead_lettered(&bus, &g, "list", 3).await;
    let all = list(&bus, &g, &all_dead_letters, 10).await;
    assert_eq!(ids(&all), ids_of(&events), "oldest first");
    assert_eq!(all[1].reason, "bad 1");
    assert_eq!(all[1].attempts, 1);
    assert_eq!(all[1].event, events[1], "the event as published");
    // Listing again finds the same, in the same order.
    let again = list(&bus, &g, &all_dead_letters, 10).await;
    assert_eq!(ids(&again), ids_of(&events), "listing takes nothing");
    let two = list(&bus, &g, &all_dead_letters, 2).await;
    assert_eq!(ids(&two), ids_of(&events[..2]), "the limit");
    let wanted = events[2].id.clone();
    let picked = list(&bus, &g, &|d: &DeadLetter| d.event.id == wanted, 10).await;
    assert_eq!(ids(&picked), vec![wanted.clone()], "the filter");
    let after = list(&bus, &g, &all_dead_letters, 10).await;
    assert_eq!(
        ids(&after),
        ids_of(&events),
        "a filtered listing takes nothing either"
    );
    assert!(
        list(&bus, &group("never-declared"), &all_dead_letters, 10)
            .await
            .is_empty(),
        "a group never declared has no dead letters"
    );
}

async fn redrive_returns_dead_letters_as_first_deliveries(bus: SharedBus) {
    let g = group("redrive");
    let bystander = group("redrive-bystander");
    let mut watcher = subscribe(&bus, &bystander, &["redrive.#"], 64).await;
    let mut sub = subscribe(&bus, &g, &["redrive.#"], 64).await;
    let mut original = event("redrive.me", "x");
    original
        .headers
        .insert("traceparent".into(), "00-trace-span-01".into());
    let keep = event("redrive.keep", "y");
    publish(&bus, &[original.clone(), keep.clone()]).await;
    for e in [&original, &keep] {
        let d = next(&mut watcher, "bystander group").await;
        assert_eq!(d.event.id, e.id);
        ack(d).await;
    }
    // The first exhausts its retries (attempts 3), the second is dead-lettered at once.
    let mut d = next(&mut sub, "attempt 1").await;
    let k = next(&mut sub, "the other").await;
    if let Err(err) = k.dead_letter("keep me").await {
        panic!("dead_letter: {err}");
    }
    for _ in 0..2 {
        if let Err(err) = d.retry("transient").await {
            panic!("retry: {err}");
        }
        d = next(&mut sub, "retried delivery").await;
    }
    if let Err(err) = d.retry("gave up").await {
        panic!("retry: {err}");
    }
    let dead = list(&bus, &g, &all_dead_letters, 10).await;
    assert_eq!(ids(&dead), vec![keep.id.clone(), original.id.clone()]);
    assert_eq!(dead[1].attempts, 3);

    let wanted = original.id.clone();
    let moved = match bus
        .redrive_dead_letters(&g, &|d: &DeadLetter| d.event.id == wanted, 10)
        .await
    {
        Ok(moved) => moved,
        Err(err) => panic!("redrive: {err}"),
    };
    assert_eq!(ids(&moved), vec![original.id.clone()]);
    let d = next(&mut sub, "redriven event").await;
    assert_eq!(d.event, original, "redriven unchanged");
    assert_eq!(d.attempt, 1, "a redrive starts the attempts again");
    ack(d).await;
    nothing_arrives(&mut sub, "after the redriven event").await;
    nothing_arrives(&mut watcher, "other groups do not get it again").await;
    let left = list(&bus, &g, &all_dead_letters, 10).await;
    assert_eq!(
        ids(&left),
        vec![keep.id.clone()],
        "only the chosen one left"
    );
    assert_eq!(left[0].reason, "keep me");
    let none = match bus
        .redrive_dead_letters(&group("never-declared"), &all_dead_letters, 10)
        .await
    {
        Ok(moved) => moved,
        Err(err) => panic!("redrive of a group never declared: {err}"),
    };
    assert!(none.is_empty());
}

async fn discard_deletes_only_the_chosen_dead_letters(bus: SharedBus) {
    let g = group("discard");
    let (mut sub, events) = dead_lettered(&bus, &g, "discard", 4).await;
    let wanted = events[1].id.clone();
    let gone = match bus
        .discard_dead_letters(&g, &|d: &DeadLetter| d.event.id == wanted, 10)
        .await
    {
        Ok(gone) => gone,
        Err(err) => panic!("discard: {err}"),
    };
    assert_eq!(ids(&gone), vec![wanted]);
    let left = list(&bus, &g, &all_dead_letters, 10).await;
    let expected: Vec<String> = [0, 2, 3].iter().map(|&i| events[i].id.clone()).collect();
    assert_eq!(ids(&left), expected, "the others stay, in order");
    let gone = match bus.discard_dead_letters(&g, &all_dead_letters, 2).await {
        Ok(gone) => gone,
        Err(err) => panic!("discard: {err}"),
    };
    assert_eq!(
        ids(&gone),
        expected[..2].to_vec(),
        "the limit, oldest first"
    );
    let gone = match bus.discard_dead_letters(&g, &all_dead_letters, 10).await {
        Ok(gone) => gone,
        Err(err) => panic!("discard: {err}"),
    };
    assert_eq!(ids(&gone), expected[2..].to_vec());
    assert!(list(&bus, &g, &all_dead_letters, 10).await.is_empty());
    nothing_arrives(&mut sub, "discarded events are not delivered").await;
}

async fn every_group_gets_each_event(bus: SharedBus) {
    let mut a = subscribe(&bus, &group("a"), &["fan.out"], 64).await;
    let mut b = subscribe(&bus, &group("b"), &["fan.*"], 64).await;
    let e = event("fan.out", "x");
    publish(&bus, std::slice::from_ref(&e)).await;
    for (sub, name) in [(&mut a, "group a"), (&mut b, "group b")] {
        let d = next(sub, name).await;
        assert_eq!(d.event.id, e.id, "{name}");
        ack(d).await;
        nothing_arrives(sub, name).await;
    }
}

async fn members_of_a_group_share_its_queue(bus: SharedBus) {
    let g = group("share");
    let mut first = subscribe(&bus, &g, &["share.#"], 1).await;
    let mut second = subscribe(&bus, &g, &["share.#"], 1).await;
    let events = [event("share.a", "1"), event("share.b", "2")];
    publish(&bus, &events).await;
    // Each holds one unsettled delivery (prefetch 1): the other must get the second.
    let d1 = next(&mut first, "first member").await;
    let d2 = next(&mut second, "second member").await;
    assert_ne!(d1.event.id, d2.event.id, "both members got the same event");
    ack(d1).await;
    ack(d2).await;

    let events: Vec<Event> = (0..8).map(|i| event("share.c", &i.to_string())).collect();
    publish(&bus, &events).await;
    let mut seen = BTreeSet::new();
    let mut per_member = [0usize; 2];
    while seen.len() < events.len() {
        let (d, member) = tokio::select! {
            d = next(&mut first, "first member") => (d, 0),
            d = next(&mut second, "second member") => (d, 1),
        };
        assert!(seen.insert(d.event.id.clone()), "event delivered twice");
        per_member[member] += 1;
        ack(d).await;
    }
    assert!(
        per_member.iter().all(|&n| n > 0),
        "one member got everything: {per_member:?}"
    );
    nothing_arrives(&mut first, "first member").await;
    nothing_arrives(&mut second, "second member").await;
}

async fn bindings_accumulate(bus: SharedBus) {
    let g = group("accumulate");
    let first = subscribe(&bus, &g, &["acc.one"], 64).await;
    drop(first);
    let mut sub = subscribe(&bus, &g, &["acc.two"], 64).await;
    publish(&bus, &[event("acc.one", "1"), event("acc.two", "2")]).await;
    let sentinel = event("acc.two", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;
    let mut keys = keys_until(&mut sub, &sentinel, "accumulated bindings").await;
    keys.sort();
    assert_eq!(keys, ["acc.one", "acc.two"]);
}

async fn ack_removes_the_event(bus: SharedBus) {
    let g = group("ack");
    let mut sub = subscribe(&bus, &g, &["ack.#"], 64).await;
    publish(&bus, &[event("ack.me", "x")]).await;
    ack(next(&mut sub, "first delivery").await).await;
    drop(sub);
    let mut sub = subscribe(&bus, &g, &["ack.#"], 64).await;
    let sentinel = event("ack.sentinel", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;
    let before = keys_until(&mut sub, &sentinel, "after ack").await;
    assert!(before.is_empty(), "acked event came back: {before:?}");
}

async fn dropped_delivery_is_redelivered_in_place(bus: SharedBus) {
    let g = group("requeue");
    let mut sub = subscribe(&bus, &g, &["rq.#"], 1).await;
    let first = event("rq.first", "1");
    let second = event("rq.second", "2");
    publish(&bus, &[first.clone(), second.clone()]).await;
    let d = next(&mut sub, "first delivery").await;
    assert_eq!(d.event.id, first.id);
    assert_eq!(d.attempt, 1);
    drop(d);
    let again = next(&mut sub, "redelivery").await;
    assert_eq!(again.event, first, "the dropped event must come back first");
    assert_eq!(again.attempt, 1, "a requeue is not a retry");
    ack(again).await;
    let d = next(&mut sub, "second event").await;
    assert_eq!(d.event.id, second.id);
    ack(d).await;
    nothing_arrives(&mut sub, "after both").await;
}

async fn delivery_outlives_its_subscription(bus: SharedBus) {
    // Graceful shutdown: stop consuming, finish in-flight work, ack it.
    let g = group("outlive");
    let mut sub = subscribe(&bus, &g, &["out.#"], 64).await;
    publish(&bus, &[event("out.live", "x")]).await;
    let d = next(&mut sub, "delivery").await;
    drop(sub);
    ack(d).await;
    let mut sub = subscribe(&bus, &g, &["out.#"], 64).await;
    let sentinel = event("out.sentinel", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;
    let before = keys_until(&mut sub, &sentinel, "after late ack").await;
    assert!(before.is_empty(), "acked event came back: {before:?}");
}

async fn dropped_subscription_returns_its_deliveries_in_order(bus: SharedBus) {
    let g = group("unsubscribe");
    let mut sub = subscribe(&bus, &g, &["unsub.#"], 64).await;
    let events: Vec<Event> = (0..3).map(|i| event("unsub.e", &i.to_string())).collect();
    publish(&bus, &events).await;
    let held = next(&mut sub, "first delivery").await;
    // Unsettled: the one in hand and those still buffered for this subscriber.
    drop(held);
    drop(sub);
    let mut sub = subscribe(&bus, &g, &["unsub.#"], 64).await;
    let mut ids = Vec::new();
    for _ in 0..events.len() {
        let d = next(&mut sub, "redelivery").await;
        assert_eq!(d.attempt, 1);
        ids.push(d.event.id.clone());
        ack(d).await;
    }
    let expected: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, expected, "requeued deliveries keep their order");
    nothing_arrives(&mut sub, "after redelivery").await;
}

async fn retry_waits_and_counts_attempts_then_dead_letters(bus: SharedBus) {
    let g = group("retry");
    let mut sub = subscribe(&bus, &g, &["retry.#"], 64).await;
    let mut original = event("retry.me", "x");
    original
        .headers
        .insert("traceparent".into(), "00-trace-span-01".into());
    publish(&bus, std::slice::from_ref(&original)).await;

    let d = next(&mut sub, "attempt 1").await;
    assert_eq!(d.attempt, 1);
    let mut previous = d;
    for (attempt, delay) in [(2, RETRY_1), (3, RETRY_2)] {
        let asked = Instant::now();
        if let Err(err) = previous.retry("transient").await {
            panic!("retry: {err}");
        }
        let d = next(&mut sub, "retried delivery").await;
        let waited = asked.elapsed();
        assert_eq!(d.attempt, attempt);
        assert_eq!(d.event, original, "a retry must carry the event unchanged");
        assert!(
            waited + TIMER_SLACK >= delay,
            "attempt {attempt} came back after {waited:?}, before the {delay:?} delay"
        );
        previous = d;
    }
    // Delays used up: the next retry dead-letters with its reason.
    if let Err(err) = previous.retry("still failing").await {
        panic!("retry: {err}");
    }
    nothing_arrives(&mut sub, "after the last retry").await;
    let dead = drain(&bus, &g, 10).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event, original);
    assert_eq!(dead[0].reason, "still failing");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        drain(&bus, &g, 10).await.is_empty(),
        "drain must take them out"
    );
}

async fn dead_letter_goes_straight_to_the_dead_letter_queue(bus: SharedBus) {
    let g = group("poison");
    let mut sub = subscribe(&bus, &g, &["poison.#"], 64).await;
    let e = event("poison.pill", "x");
    publish(&bus, std::slice::from_ref(&e)).await;
    let d = next(&mut sub, "delivery").await;
    if let Err(err) = d.dead_letter("cannot parse").await {
        panic!("dead_letter: {err}");
    }
    nothing_arrives(&mut sub, "after dead_letter").await;
    let dead = drain(&bus, &g, 10).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event, e);
    assert_eq!(dead[0].reason, "cannot parse");
    assert_eq!(dead[0].attempts, 1);
}

async fn drain_respects_the_limit(bus: SharedBus) {
    let g = group("drain");
    let mut sub = subscribe(&bus, &g, &["drain.#"], 64).await;
    let events: Vec<Event> = (0..3).map(|i| event("drain.e", &i.to_string())).collect();
    publish(&bus, &events).await;
    for _ in 0..3 {
        let d = next(&mut sub, "delivery").await;
        if let Err(err) = d.dead_letter("bad").await {
            panic!("dead_letter: {err}");
        }
    }
    let first = drain(&bus, &g, 2).await;
    let rest = drain(&bus, &g, 10).await;
    let ids: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|d| d.event.id.as_str())
        .collect();
    let expected: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(first.len(), 2);
    assert_eq!(ids, expected, "dead letters come out oldest first");
}

async fn prefetch_bounds_unsettled_deliveries(bus: SharedBus) {
    let g = group("prefetch");
    let mut sub = subscribe(&bus, &g, &["pf.#"], 2).await;
    let events: Vec<Event> = (0..5).map(|i| event("pf.e", &i.to_string())).collect();
    publish(&bus, &events).await;
    let a = next(&mut sub, "first").await;
    let b = next(&mut sub, "second").await;
    nothing_arrives(&mut sub, "with two unsettled and prefetch 2").await;
    ack(a).await;
    let c = next(&mut sub, "third, after one ack").await;
    nothing_arrives(&mut sub, "with two unsettled again").await;
    ack(b).await;
    ack(c).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let d = next(&mut sub, "rest").await;
        ids.push(d.event.id.clone());
        ack(d).await;
    }
    let expected: Vec<String> = events[3..].iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, expected);
}

async fn queue_keeps_events_while_nobody_consumes(bus: SharedBus) {
    let g = group("durable");
    drop(subscribe(&bus, &g, &["keep.#"], 64).await);
    let kept = event("keep.me", "x");
    publish(&bus, std::slice::from_ref(&kept)).await;
    let mut sub = subscribe(&bus, &g, &["keep.#"], 64).await;
    let d = next(&mut sub, "event published while nobody consumed").await;
    assert_eq!(d.event, kept);
    assert_eq!(d.attempt, 1);
    ack(d).await;
}

async fn ids_headers_and_payload_are_preserved(bus: SharedBus) {
    let g = group("exact");
    let mut sub = subscribe(&bus, &g, &["exact.#"], 64).await;
    let mut e = Event::new(
        "exact.event",
        Bytes::from_static(&[0, 1, 2, 0xfe, 0xff, b'\n', 0]),
    );
    e.id = format!("custom-id-{}", uuid::Uuid::now_v7());
    e.headers.insert(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    e.headers
        .insert("tracestate".into(), "vendor=é,ünicode".into());
    e.headers.insert("empty".into(), String::new());
    let empty_payload = event("exact.empty", "");
    publish(&bus, &[e.clone(), empty_payload.clone()]).await;
    let d = next(&mut sub, "event").await;
    assert_eq!(d.event, e);
    ack(d).await;
    let d = next(&mut sub, "empty event").await;
    assert_eq!(d.event, empty_payload);
    ack(d).await;
}

async fn concurrent_publishers(bus: SharedBus) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 10;
    let g = group("concurrent");
    let mut sub = subscribe(&bus, &g, &["conc.#"], 64).await;
    let mut expected = BTreeSet::new();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let events: Vec<Event> = (0..PER_TASK)
            .map(|i| event("conc.e", &format!("{t}-{i}")))
            .collect();
        expected.extend(events.iter().map(|e| e.id.clone()));
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            // Half one-by-one, half as one batch, interleaved with the others.
            for e in &events[..PER_TASK / 2] {
                bus.publish(std::slice::from_ref(e)).await?;
            }
            bus.publish(&events[PER_TASK / 2..]).await
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("concurrent publish: {err}"),
            Err(err) => panic!("publisher task: {err}"),
        }
    }
    let mut seen = BTreeSet::new();
    while seen.len() < expected.len() {
        let d = next(&mut sub, "concurrently published event").await;
        assert!(seen.insert(d.event.id.clone()), "event delivered twice");
        ack(d).await;
    }
    assert_eq!(seen, expected);
}

async fn empty_publish_and_ping(bus: SharedBus) {
    if let Err(err) = bus.publish(&[]).await {
        panic!("empty publish: {err}");
    }
    if let Err(err) = bus.ping().await {
        panic!("ping: {err}");
    }
}

async fn unknown_group_has_no_dead_letters(bus: SharedBus) {
    let dead = drain(&bus, &group("never-subscribed"), 10).await;
    assert!(dead.is_empty(), "{dead:?}");
}

async fn invalid_input_is_a_config_error(bus: SharedBus) {
    let long = "k".repeat(300);
    let outcome = bus.publish(&[event(&long, "x")]).await;
    assert!(
        matches!(outcome, Err(BusError::Config(_))),
        "routing key over 255 bytes: {outcome:?}"
    );
    let mut reserved = event("a.b", "x");
    reserved
        .headers
        .insert(crate::rabbitmq::ATTEMPT_HEADER.into(), "9".into());
    let outcome = bus.publish(&[reserved]).await;
    assert!(
        matches!(outcome, Err(BusError::Config(_))),
        "reserved header: {outcome:?}"
    );
    let outcome = bus.subscribe(SubscribeSpec::new("", &["a.b"])).await;
    assert!(
        matches!(outcome, Err(BusError::Config(_))),
        "empty group: {:?}",
        outcome.err()
    );
    let outcome = bus
        .subscribe(SubscribeSpec::new(group("long"), &[long.as_str()]))
        .await;
    assert!(
        matches!(outcome, Err(BusError::Config(_))),
        "pattern over 255 bytes: {:?}",
        outcome.err()
    );
}

/// Waits until the group's queue depth is `want` (brokers count
/// asynchronously), or panics with the last value seen.
async fn depth_becomes(bus: &SharedBus, group: &str, want: QueueDepth, what: &str) {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let depth = match bus.queue_depth(group).await {
            Ok(depth) => depth,
            Err(err) => panic!("{what}: queue depth of {group}: {err}"),
        };
        if depth == want {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: queue depth {depth:?}, expected {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn queue_depth_counts_waiting_and_dead_letters(bus: SharedBus) {
    let g = group("depth");
    depth_becomes(&bus, &g, QueueDepth::default(), "a group never subscribed").await;
    let mut sub = subscribe(&bus, &g, &["depth.#"], 1).await;
    let events: Vec<Event> = (0..4).map(|i| event("depth.e", &i.to_string())).collect();
    publish(&bus, &events).await;
    let first = next(&mut sub, "first").await;
    depth_becomes(
        &bus,
        &g,
        QueueDepth {
            ready: 3,
            dead_letters: 0,
        },
        "one held (prefetch 1), three waiting",
    )
    .await;
    if let Err(err) = first.dead_letter("bad").await {
        panic!("dead_letter: {err}");
    }
    let second = next(&mut sub, "second").await;
    depth_becomes(
        &bus,
        &g,
        QueueDepth {
            ready: 2,
            dead_letters: 1,
        },
        "after a dead letter",
    )
    .await;
    ack(second).await;
    for _ in 0..2 {
        ack(next(&mut sub, "rest").await).await;
    }
    depth_becomes(
        &bus,
        &g,
        QueueDepth {
            ready: 0,
            dead_letters: 1,
        },
        "all consumed",
    )
    .await;
}

async fn subscribe_broadcast(bus: &SharedBus, name: &str, bindings: &[&str]) -> Subscription {
    match bus
        .subscribe(SubscribeSpec::broadcast(name, bindings))
        .await
    {
        Ok(sub) => sub,
        Err(err) => panic!("subscribe broadcast {name} {bindings:?}: {err}"),
    }
}

async fn broadcast_subscribers_each_get_every_event(bus: SharedBus) {
    // Two replicas under one name, and an ordinary group alongside.
    let name = group("broadcast");
    let mut first = subscribe_broadcast(&bus, &name, &["cast.#"]).await;
    let mut second = subscribe_broadcast(&bus, &name, &["cast.#"]).await;
    let mut worker = subscribe(&bus, &group("worker"), &["cast.#"], 64).await;
    publish(&bus, &[event("cast.a", "1"), event("cast.b", "2")]).await;
    publish(&bus, &[event("cast.c", "3")]).await;
    let sentinel = event("cast.end", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;
    for (sub, what) in [
        (&mut first, "first broadcast subscriber"),
        (&mut second, "second broadcast subscriber"),
        (&mut worker, "the group"),
    ] {
        let keys = keys_until(sub, &sentinel, what).await;
        assert_eq!(keys, ["cast.a", "cast.b", "cast.c"], "{what}");
        nothing_arrives(sub, what).await;
    }
}

async fn a_broadcast_queue_goes_with_its_subscriber(bus: SharedBus) {
    let name = group("gone");
    let mut first = subscribe_broadcast(&bus, &name, &["gone.#"]).await;
    publish(&bus, &[event("gone.seen", "1")]).await;
    ack(next(&mut first, "first subscriber").await).await;
    drop(first);
    // Nobody listens under the name now: nothing is kept for a later one.
    // With no queue bound the publish is unroutable; RabbitMQ may still be
    // deleting the queue, which then takes the event down with it.
    match bus.publish(&[event("gone.missed", "2")]).await {
        Ok(()) | Err(BusError::Unroutable { .. }) => {}
        Err(err) => panic!("publish: {err}"),
    }
    let mut later = subscribe_broadcast(&bus, &name, &["gone.#"]).await;
    let sentinel = event("gone.end", "end");
    publish(&bus, std::slice::from_ref(&sentinel)).await;
    let keys = keys_until(&mut later, &sentinel, "later subscriber").await;
    assert!(keys.is_empty(), "a later subscriber got {keys:?}");
    let depth = match bus.queue_depth(&name).await {
        Ok(depth) => depth,
        Err(err) => panic!("queue depth of {name}: {err}"),
    };
    assert_eq!(
        depth,
        QueueDepth::default(),
        "a broadcast keeps no group queue"
    );
}

async fn broadcast_retry_and_dead_letter_drop_the_event(bus: SharedBus) {
    let name = group("cast-drop");
    let mut sub = subscribe_broadcast(&bus, &name, &["drop.#"]).await;
    publish(&bus, &[event("drop.retried", "1")]).await;
    let d = next(&mut sub, "retried").await;
    if let Err(err) = d.retry("later").await {
        panic!("retry: {err}");
    }
    publish(&bus, &[event("drop.dead", "2")]).await;
    let d = next(&mut sub, "dead-lettered").await;
    assert_eq!(
        d.event.routing_key, "drop.dead",
        "the retried event came back"
    );
    if let Err(err) = d.dead_letter("never").await {
        panic!("dead letter: {err}");
    }
    // Longer than the retry delay: a retry would be back by now.
    tokio::time::sleep(RETRY_2 + TIMER_SLACK).await;
    nothing_arrives(&mut sub, "after retry and dead letter").await;
    assert!(drain(&bus, &name, 10).await.is_empty(), "dead letters kept");
}
