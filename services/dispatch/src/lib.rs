//! Dispatch: sends agents' replies to the channel they belong on.
//!
//! It consumes `outbound.requested`, looks the channel up in ingress (its
//! kind, settings and secret, through `telenet_channels::directory`), fits
//! the message to what the channel takes (voice notes in a form it accepts,
//! stored files linked, through the media service), has the channel's
//! provider send it (`telenet_channels::Provider::send`), and records the
//! result in its `deliveries` table with an `outbound.status` event.
//! Passing trouble at the provider (5xx, 408, 429, timeouts, refused
//! connections) is retried through the bus with its growing delays until
//! `max_attempts`; any other refusal fails the delivery at once. Failed
//! deliveries are listed for operators as dead letters. Dispatch itself
//! knows no channel kind.
//!
//! It honours what each provider declares (`Provider::capabilities`): a
//! text longer than a provider that refuses long texts takes, or an
//! attachment of a type or size it does not accept, fails at once without
//! a call; its sending limits (per channel, per recipient) are counted in
//! the process's rate-limit store (Redis, shared by every replica, or
//! memory), and a message over one waits, uncounted, until it is allowed;
//! a provider that throttles (`SendOutcome::Throttled`) pauses the channel
//! for its `retry_after` for every replica. A channel's `api_base_url`
//! passes the same egress policy as a custom channel's `outbound_url`.
//!
//! The crate has the rooms of every service: [`domain`] (the rules, no
//! I/O), `store` (its SQL, the only place that speaks SQL), `grpc` (the
//! `telenet.dispatch.v1.Dispatch` adapter), `consumers` (the
//! `outbound.requested` handler), [`media`] (its client of the media
//! service), [`metrics`], [`Error`] and [`start`], which wires them for the
//! process.

mod config;
mod consumers;
pub mod domain;
mod error;
mod grpc;
pub mod media;
pub mod metrics;
mod service;
mod start;
mod store;

pub use config::Config;
pub use consumers::{GROUP, subscription};
pub use domain::profile_for;
pub use error::Error;
pub use media::{GrpcMediaFiles, MediaFiles, VariantAnswer, VariantError, VariantPart};
pub use service::DispatchService;
pub use start::start;

use telenet_runtime::Call;

/// The service's name: its metrics label, readiness name and schema.
pub const NAME: &str = "dispatch";

/// The services it calls (see `telenet_runtime::Call`): ingress, for the
/// channel to send through; media, for voice-note variants and download
/// links. Its context refuses any other, and the chart's NetworkPolicies
/// allow these (`deploy/tools/callgraph.py`).
pub const CALLS: &[Call] = &[Call::grpc("ingress"), Call::grpc("media")];

/// The consumer groups it subscribes with, exactly the specs its consumers
/// use: `telenet migrate` and every process at start declare the groups of
/// every service before anything is published (ADR 14).
pub fn consumer_groups() -> Vec<telenet_bus::SubscribeSpec> {
    vec![consumers::subscription()]
}

pub const MIGRATIONS: telenet_store::Migrations =
    telenet_store::migrations!("0100_deliveries", "0110_delivery_deadline");
