//! Contacts: the people who write in, found or created by their channel
//! identity (PRODUCT.md: "a contact never seen before is created, with its
//! channel identity").
//!
//! The crate has the rooms of every service: [`domain`] (the rules, no
//! I/O), `store` (its SQL, the only place that speaks SQL), `grpc` (the
//! `telenet.contacts.v1.Contacts` adapter), `consumers` (bus handlers),
//! [`Error`] and [`start`], which wires them for the process.

mod consumers;
pub mod domain;
mod error;
mod grpc;
mod service;
mod start;
mod store;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use service::ContactsService;
pub use start::start;

use telenet_runtime::Call;

/// The service's name: its metrics label, readiness name and schema.
pub const NAME: &str = "contacts";

/// The services it calls: none (see `telenet_runtime::Call`); its context
/// refuses any, and the chart's NetworkPolicies let it call none
/// (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[];

/// The consumer groups it subscribes with: none, it consumes no events.
/// (`telenet migrate` and every process at start declare the groups of
/// every service, ADR 14.)
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    Vec::new()
}

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!("0100_contacts");

/// Contacts service settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {}
