//! Conversations: the inbox. Inbound messages open or continue a contact's
//! conversation; members reply, assign, unassign and close with a closing
//! note (PRODUCT.md, the messages module). Workspaces, members and API
//! tokens live here too.
//!
//! Where things are:
//!
//! - [`domain`]: the rules, with no I/O (`assign_on_reply`,
//!   `close_conversation`, statuses only moving forward, text limits, …).
//! - `store`: all SQL, and the only place that speaks it.
//! - [`inbox`] and [`members`]: the operations. Each checks its input,
//!   loads through the store, lets the domain decide, and writes the
//!   change with its events in one transaction.
//! - [`grpc`]: the `Conversations` and `Members` gRPC services, adapters
//!   between protobuf and the domain.
//! - `consumers`: the bus handlers (inbound messages, delivery statuses,
//!   attachment outcomes).
//! - [`error`]: every refusal, converted to a gRPC status or a consumer
//!   outcome only at those boundaries.
//! - [`start()`]: the service as a process starts it.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod inbox;
pub mod members;

mod config;
mod consumers;
mod proto;
mod start;
mod store;

pub use config::Config;
pub use error::Error;
pub use inbox::Inbox;
pub use members::Members;
pub use start::start;

use telenet_runtime::Call;

/// The service's name: its metrics label, readiness name and schema.
pub const NAME: &str = "conversations";

/// The services it calls (see `telenet_runtime::Call`): contacts, for the
/// contact behind each inbound message, and ingress, for a channel's
/// provider (its reply window). Its context refuses any other, and the
/// chart's NetworkPolicies allow these (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[Call::grpc("contacts"), Call::grpc("ingress")];

/// The consumer groups it subscribes with, exactly the specs its consumers
/// use: `telenet migrate` and every process at start declare the groups of
/// every service before anything is published (ADR 14).
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    consumers::subscriptions()
}

pub const MIGRATIONS: telenet_store::Migrations = telenet_store::migrations!(
    "0100_conversations",
    "0101_token_lifecycle",
    "0102_channel_messages",
    "0103_workspace_settings"
);
