//! plugsync keeps the plugins of a running Rust host in the state operators committed to git,
//! and changes them without restarting the host.
//!
//! This crate is the sidecar and CLI. The runtime a host embeds is `plugsync-host`; plugin
//! authors use `plugsync-plugin`. Each command of the binary is a thin handler over one
//! function of [`ops`].

pub mod apply;
mod cli;
mod client;
mod error;
pub mod market;
pub mod observe;
pub mod ops;
pub mod plan;
pub mod preflight;
pub mod registry;
pub mod render;
pub mod resolve;
pub mod spec;
pub mod store;
pub mod watch;

pub use cli::run;
pub use client::DEFAULT_HOST;
pub use error::{Error, Result};
