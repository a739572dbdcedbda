//! The plugsync plugin SDK.
//!
//! A plugin author implements [`Plugin`] in safe Rust and calls [`export_plugin!`] once; the
//! crate, built as a `cdylib`, is then a plugin library that a plugsync host loads, calls and
//! hot-swaps while it runs. This crate also holds what host and plugin share: the stable C ABI
//! ([`abi`]), the metadata format ([`PluginMetadata`]) and the one canonical JSON form used for
//! every hash and signature ([`canonical_json`]).
//!
//! Build plugins with `panic = "unwind"` (Cargo's default): the SDK catches every panic inside
//! the plugin and reports it to the host as an error, but a plugin built with `panic = "abort"`
//! would take its host down, so hosts refuse it. What no `catch_unwind` can catch (an abort, a
//! stack overflow, a segfault, an endless loop) an in-process plugin shares with its host.

#[allow(unsafe_code)]
pub mod abi;
mod canonical;
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod export;
mod metadata;
mod plugin;

pub use canonical::canonical_json;
pub use metadata::{BuildInfo, PluginMetadata};
pub use plugin::{
    Direction, HostContext, HostTime, Migration, MigrationDoc, Plugin, PluginError, SwapSafety,
};

/// Version of this SDK, recorded in every plugin's metadata.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Version of rustc that built this SDK, recorded in every plugin's metadata.
pub const RUSTC_VERSION: &str = env!("PLUGSYNC_SDK_RUSTC_VERSION");

/// Items the [`export_plugin!`] macro expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi;
    pub use crate::export;
    pub use crate::metadata::{MetadataWriter, str_eq};
}
