//! Reporting: aggregates fed by events, never by reading other services'
//! tables.
//!
//! It consumes `conversation.opened`, `conversation.closed` and
//! `message.created` and keeps, per workspace, UTC day and channel, how many
//! conversations were opened and closed and how many messages came in and
//! went out. Each event is counted in the same transaction that records it as
//! processed, so a redelivered event counts once; a conversation's opening
//! and closing are also recorded per conversation, so each counts once
//! even when two events report it.
//!
//! The crate has the rooms of every service: [`domain`] (what events count
//! and which days a report covers, no I/O), `store` (its SQL, the only place
//! that speaks SQL), `grpc` (the `telenet.reporting.v1.Reports` adapter),
//! `consumers` (the event consumer), [`Error`] and [`start`], which wires
//! them for the process.

mod consumers;
pub mod domain;
mod error;
mod grpc;
mod service;
mod start;
mod store;

use serde::{Deserialize, Serialize};

pub use consumers::{GROUP, subscription};
pub use domain::MAX_RANGE_DAYS;
pub use error::Error;
pub use service::ReportingService;
pub use start::start;

use telenet_runtime::Call;

/// The service's name: its metrics label, readiness name and schema.
pub const NAME: &str = "reporting";

/// The services it calls: none (see `telenet_runtime::Call`); its context
/// refuses any, and the chart's NetworkPolicies let it call none
/// (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[];

/// The consumer groups it subscribes with, exactly the specs its consumers
/// use: `telenet migrate` and every process at start declare the groups of
/// every service before anything is published (ADR 14).
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    vec![consumers::subscription()]
}

pub const MIGRATIONS: telenet_store::Migrations =
    telenet_store::migrations!("0100_daily_volume", "0101_conversation_milestones");

/// Reporting settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Events applied at once. Events of one day and channel update the same
    /// row, so more mostly adds lock waits; a few keep the database busy.
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { concurrency: 8 }
    }
}
