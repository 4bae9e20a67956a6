//! Shared plumbing for TELENET services, so each service's `main.rs` stays
//! thin and every service behaves the same at its edges:
//!
//! - [`config`]: defaults → TOML file → `TELENET_…` env → flags, with errors
//!   naming the exact key and its origin;
//! - [`telemetry`]: `tracing` logs, OpenTelemetry traces over OTLP, W3C trace
//!   context over gRPC metadata and AMQP headers;
//! - [`error`]: the one error-code table mapped to gRPC codes and HTTP
//!   statuses;
//! - [`grpc`]: the gRPC server (health, reflection, timeouts, limits,
//!   readiness) and client channel (timeouts, keepalive, retries);
//! - [`tls`]: mutual TLS between services, certificates re-read when they
//!   change;
//! - [`reload`]: files read again on a timer, failures reported once;
//! - [`infra_tls`]: TLS to PostgreSQL, RabbitMQ and Redis (a private CA, a
//!   client certificate);
//! - [`grpc_auth`]: who may call what: services by their certificates,
//!   platform clients by their credentials and workspaces;
//! - [`http`]: serving an HTTP listener, with read timeouts against slow
//!   clients;
//! - [`cache`]: a bounded cache of answers with a TTL;
//! - [`client`]: the client stack every gRPC call goes through (metrics,
//!   trace propagation, retry of idempotent calls, timeout);
//! - [`fs`]: files kept in the data directory (owner-only);
//! - [`mime`]: MIME type essences;
//! - [`metrics`]: Prometheus metrics (the process's registry, RED layers
//!   for gRPC and HTTP, the `/metrics` endpoint);
//! - [`shutdown`]: signal handling and listener binding.

pub mod cache;
mod call_status;
pub mod client;
pub mod config;
pub mod error;
pub mod fs;
pub mod grpc;
pub mod grpc_auth;
pub mod http;
pub mod infra_tls;
pub mod metrics;
pub mod mime;
pub mod reload;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

#[cfg(test)]
mod security_tests;
