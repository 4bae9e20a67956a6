//! Any bytes as a request to the gateway (`Case::from_bytes`: the first
//! byte picks the operation, the second the token and content type, `0xff`
//! bytes separate the path, the query, the range and the body), answered as
//! `Target::check` requires: a clear problem when refused and nothing
//! changed, the upstream called when accepted, never a panic or a 500.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

/// One runtime and one gateway for the whole run (the fake members
/// service runs on the runtime's worker).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
});

static TARGET: LazyLock<fuzzing::Target> =
    LazyLock::new(|| RUNTIME.block_on(fuzzing::Target::new()));

fuzz_target!(|data: &[u8]| {
    let case = fuzzing::Case::from_bytes(data);
    if let Err(why) = RUNTIME.block_on(TARGET.check(&case)) {
        panic!("{why}\n  {case:?}");
    }
});
