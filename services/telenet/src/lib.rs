//! The `telenet` command: the whole suite in one process (`telenet dev`),
//! chosen services for production (`telenet serve`), and migrations.

pub mod cli;
pub mod config;
mod seed;
pub mod suite;

pub use config::{Config, ServiceName};
pub use suite::{Running, Suite};
