//! The contract every [`RateLimitStore`](crate::RateLimitStore) must meet,
//! as one suite run against each of them (see `tests/conformance.rs`).
//!
//! Every case uses keys of its own (random), so the suite can share a store
//! with other runs. Rates are small (a refill takes tens to hundreds of
//! milliseconds) and waits are the ones the store itself asks for: the
//! cases check what is allowed after waiting, never how fast anything is.

use std::time::Duration;

use crate::{Cell, Decision, Quota, SharedStore};

/// A store and a second handle onto the same state: for Redis, another
/// connection on the same prefix (another replica); for memory, the same
/// store.
pub struct Ctx {
    /// The store under test.
    pub store: SharedStore,
    /// Another handle onto the same state.
    pub replica: SharedStore,
}

macro_rules! run_cases {
    ($ctx:expr, $($case:ident),+ $(,)?) => {
        $(
            eprintln!("rate limit conformance: {}", stringify!($case));
            $case($ctx).await;
        )+
    };
}

/// Runs every case. Panics, naming the case, on the first violation.
pub async fn run_all(store: SharedStore, replica: SharedStore) {
    let ctx = &Ctx { store, replica };
    run_cases!(
        ctx,
        ping_answers,
        the_burst_is_allowed_then_refused_with_the_wait,
        a_refused_request_takes_nothing,
        the_bucket_refills_over_time,
        keys_are_independent,
        cells_are_counted_all_or_nothing,
        the_longest_wait_names_its_cell,
        replicas_share_the_counts,
    );
}

fn fresh_key(what: &str) -> String {
    format!("{what}:{}", uuid::Uuid::new_v4().simple())
}

fn quota(per_second: u32, burst: u32) -> Quota {
    Quota::per_second(per_second, burst).unwrap_or_else(|e| panic!("{e}"))
}

/// Timers and clocks may be a hair apart.
const SLACK: Duration = Duration::from_millis(20);

async fn check(store: &SharedStore, cells: &[Cell<'_>]) -> Decision {
    store
        .check(cells)
        .await
        .unwrap_or_else(|e| panic!("check failed: {e}"))
}

async fn check_one(store: &SharedStore, key: &str, quota: Quota) -> Decision {
    check(store, &[Cell { key, quota }]).await
}

fn retry_after(decision: Decision) -> Duration {
    match decision {
        Decision::Limited { retry_after, .. } => retry_after,
        Decision::Allowed { remaining } => {
            panic!("allowed (remaining {remaining}) where a refusal was due")
        }
    }
}

async fn ping_answers(ctx: &Ctx) {
    ctx.store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ping: {e}"));
}

async fn the_burst_is_allowed_then_refused_with_the_wait(ctx: &Ctx) {
    let key = fresh_key("burst");
    let q = quota(1, 3);
    for expected in [2, 1, 0] {
        assert_eq!(
            check_one(&ctx.store, &key, q).await,
            Decision::Allowed {
                remaining: expected
            }
        );
    }
    let wait = retry_after(check_one(&ctx.store, &key, q).await);
    // One interval (1 s) from the first request, less what has passed.
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    assert!(wait > Duration::from_millis(500), "{wait:?}");
}

async fn a_refused_request_takes_nothing(ctx: &Ctx) {
    let key = fresh_key("refused");
    let q = quota(2, 2);
    for _ in 0..2 {
        check_one(&ctx.store, &key, q).await;
    }
    // Refusals do not push the wait further out.
    let first = retry_after(check_one(&ctx.store, &key, q).await);
    let second = retry_after(check_one(&ctx.store, &key, q).await);
    assert!(second <= first, "{second:?} after {first:?}");
    tokio::time::sleep(first + SLACK).await;
    assert_eq!(
        check_one(&ctx.store, &key, q).await,
        Decision::Allowed { remaining: 0 },
        "one request once the wait asked for is over"
    );
    retry_after(check_one(&ctx.store, &key, q).await);
}

async fn the_bucket_refills_over_time(ctx: &Ctx) {
    let key = fresh_key("refill");
    let q = quota(5, 4);
    for _ in 0..4 {
        check_one(&ctx.store, &key, q).await;
    }
    retry_after(check_one(&ctx.store, &key, q).await);
    // Idle for the whole burst's worth of intervals: the whole burst again.
    tokio::time::sleep(q.interval() * 4 + SLACK).await;
    for expected in [3, 2, 1, 0] {
        assert_eq!(
            check_one(&ctx.store, &key, q).await,
            Decision::Allowed {
                remaining: expected
            }
        );
    }
    retry_after(check_one(&ctx.store, &key, q).await);
}

async fn keys_are_independent(ctx: &Ctx) {
    let (a, b) = (fresh_key("a"), fresh_key("b"));
    let q = quota(1, 2);
    for _ in 0..2 {
        check_one(&ctx.store, &a, q).await;
    }
    retry_after(check_one(&ctx.store, &a, q).await);
    assert_eq!(
        check_one(&ctx.store, &b, q).await,
        Decision::Allowed { remaining: 1 },
        "another key keeps its whole burst"
    );
}

async fn cells_are_counted_all_or_nothing(ctx: &Ctx) {
    let (wide, narrow) = (fresh_key("wide"), fresh_key("narrow"));
    let (wide_q, narrow_q) = (quota(1, 5), quota(1, 1));
    let both = [
        Cell {
            key: &wide,
            quota: wide_q,
        },
        Cell {
            key: &narrow,
            quota: narrow_q,
        },
    ];
    assert_eq!(
        check(&ctx.store, &both).await,
        Decision::Allowed { remaining: 0 },
        "the tightest cell's remaining"
    );
    match check(&ctx.store, &both).await {
        Decision::Limited { by, .. } => assert_eq!(by, 1, "the narrow cell refused"),
        other => panic!("{other:?}"),
    }
    // The refused request was not counted against the wide cell.
    assert_eq!(
        check_one(&ctx.store, &wide, wide_q).await,
        Decision::Allowed { remaining: 3 }
    );
}

async fn the_longest_wait_names_its_cell(ctx: &Ctx) {
    let (fast, slow) = (fresh_key("fast"), fresh_key("slow"));
    let (fast_q, slow_q) = (quota(100, 1), quota(1, 1));
    check_one(&ctx.store, &fast, fast_q).await;
    check_one(&ctx.store, &slow, slow_q).await;
    let both = [
        Cell {
            key: &fast,
            quota: fast_q,
        },
        Cell {
            key: &slow,
            quota: slow_q,
        },
    ];
    match check(&ctx.store, &both).await {
        Decision::Limited { by, retry_after } => {
            assert_eq!(by, 1, "the slow cell has the longest wait");
            assert!(retry_after > Duration::from_millis(500), "{retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
}

async fn replicas_share_the_counts(ctx: &Ctx) {
    let key = fresh_key("shared");
    let q = quota(1, 4);
    for (i, store) in [&ctx.store, &ctx.replica, &ctx.store, &ctx.replica]
        .into_iter()
        .enumerate()
    {
        assert!(
            matches!(check_one(store, &key, q).await, Decision::Allowed { .. }),
            "request {i} is within the burst"
        );
    }
    retry_after(check_one(&ctx.replica, &key, q).await);
    retry_after(check_one(&ctx.store, &key, q).await);
}
