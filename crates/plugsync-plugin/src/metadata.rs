//! Plugin metadata: what a library says about itself, readable without running it.
//!
//! The [`export_plugin!`](crate::export_plugin) macro builds the metadata JSON at compile time
//! from literals (with [`MetadataWriter`]) and places the bytes in the
//! [`METADATA_SECTION`](crate::abi::METADATA_SECTION) section of the library, so that the loader
//! and `plugsync inspect` parse it from the file before any plugin code runs. The vtable points
//! at the same bytes, so the linker keeps them and the loader can check both copies agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything a plugin declares about itself.
///
/// Unknown fields are ignored rather than refused: a later ABI minor may add fields, and an
/// older host must still load the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMetadata {
    /// ABI major version the library was built for.
    pub abi: u16,
    /// ABI minor version the library was built for, so that a host can refuse a library whose
    /// vtable lacks entries it needs before mapping it. Absent (read as 0) in metadata written
    /// by SDKs older than ABI 1.2, which did not record it: such a library may be 1.0.
    #[serde(default)]
    pub abi_minor: u16,
    /// Plugin id, e.g. `ma_cross`: the slot it fills in a host.
    pub id: String,
    /// The plugin's own semantic version, e.g. `2.1.0`.
    pub version: String,
    /// Kind of plugin, e.g. `strategy` or `risk`.
    pub kind: String,
    /// Version of the state schema; a migration changes it.
    pub state_schema: u32,
    /// Host framework versions this plugin runs in (a semver requirement).
    pub framework: String,
    /// Other plugins this one needs, by id, with a semver requirement each.
    pub dependencies: BTreeMap<String, String>,
    /// Semver requirements on the versions this one can migrate state up from.
    pub migrates_from: Vec<String>,
    /// Semver requirements on the older versions this one can migrate its state down to.
    pub downgrades_to: Vec<String>,
    /// How the library was built.
    pub build: BuildInfo,
}

/// How a plugin library was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// `unwind` or `abort`. An `abort` plugin kills its host on its first panic, so hosts
    /// refuse it unless explicitly allowed.
    pub panic: String,
    /// Version of the plugsync-plugin SDK the plugin was built with.
    pub sdk: String,
    /// Version of rustc that built it.
    pub rustc: String,
}

impl PluginMetadata {
    /// Parses metadata bytes as found in the library's section or vtable.
    pub fn from_json(bytes: &[u8]) -> Result<PluginMetadata, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the library was built with `panic = "unwind"`, so that its panics can be caught.
    pub fn unwinds(&self) -> bool {
        self.build.panic == "unwind"
    }
}

/// Builds a JSON document in a `const` context from string pieces.
///
/// Used twice by the export macro with the same pieces: once with no buffer to learn the
/// length, once to fill an array of exactly that length. String values are checked at compile
/// time to contain only characters that need no JSON escaping, so a typo in a literal is a
/// compile error rather than corrupt metadata.
#[doc(hidden)]
#[derive(Debug)]
pub struct MetadataWriter<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Whether the next item in the current object or array needs a comma before it.
    needs_comma: bool,
}

impl<const N: usize> Default for MetadataWriter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MetadataWriter<N> {
    /// An empty writer.
    pub const fn new() -> Self {
        MetadataWriter {
            buf: [0; N],
            len: 0,
            needs_comma: false,
        }
    }

    const fn push(mut self, byte: u8) -> Self {
        if N > 0 {
            self.buf[self.len] = byte;
        }
        self.len += 1;
        self
    }

    const fn raw(mut self, text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            self = self.push(bytes[i]);
            i += 1;
        }
        self
    }

    const fn comma(mut self) -> Self {
        if self.needs_comma {
            self = self.push(b',');
        }
        self.needs_comma = true;
        self
    }

    /// Writes a JSON string value; panics (a compile error in `const`) on characters that
    /// would need escaping.
    pub const fn string(self, text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f,
                "plugin metadata strings must be printable ASCII without quotes or backslashes"
            );
            i += 1;
        }
        self.comma().push(b'"').raw(text).push(b'"')
    }

    /// Writes an object key (a string followed by a colon).
    pub const fn key(self, key: &str) -> Self {
        let mut w = self.string(key).push(b':');
        w.needs_comma = false;
        w
    }

    /// Writes an unsigned number.
    pub const fn number(self, value: u64) -> Self {
        let mut w = self.comma();
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut v = value;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            w = w.push(digits[n]);
        }
        w
    }

    /// Opens an object.
    pub const fn begin_object(self) -> Self {
        let mut w = self.comma().push(b'{');
        w.needs_comma = false;
        w
    }

    /// Closes an object.
    pub const fn end_object(self) -> Self {
        let mut w = self.push(b'}');
        w.needs_comma = true;
        w
    }

    /// Opens an array.
    pub const fn begin_array(self) -> Self {
        let mut w = self.comma().push(b'[');
        w.needs_comma = false;
        w
    }

    /// Closes an array.
    pub const fn end_array(self) -> Self {
        let mut w = self.push(b']');
        w.needs_comma = true;
        w
    }

    /// Number of bytes written (or that would have been, for a zero-sized writer).
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The written bytes; `N` must equal [`len`](Self::len).
    pub const fn finish(self) -> [u8; N] {
        assert!(self.len == N, "metadata length mismatch");
        self.buf
    }
}

/// Whether two strings are equal, in a `const` context (`==` on `str` is not `const`).
///
/// [`export_plugin!`](crate::export_plugin) asserts with it, at compile time, that an explicit
/// `version` is the plugin crate's own (`CARGO_PKG_VERSION`): the version a host reads from the
/// metadata must be the one the package was published and resolved as.
#[doc(hidden)]
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_without_an_abi_minor_reads_as_minor_0() {
        let old = serde_json::json!({
            "abi": 1, "id": "x", "version": "1.0.0", "kind": "strategy", "state_schema": 1,
            "framework": "*", "dependencies": {}, "migrates_from": [], "downgrades_to": [],
            "build": {"panic": "unwind", "sdk": "0.1.0", "rustc": "1.88.0"}
        });
        let metadata = PluginMetadata::from_json(old.to_string().as_bytes()).unwrap();
        assert_eq!((metadata.abi, metadata.abi_minor), (1, 0));
        let mut new = old;
        new["abi_minor"] = 2.into();
        let metadata = PluginMetadata::from_json(new.to_string().as_bytes()).unwrap();
        assert_eq!((metadata.abi, metadata.abi_minor), (1, 2));
    }

    #[test]
    fn str_eq_is_byte_equality_usable_in_const() {
        const { assert!(str_eq("2.0.0", "2.0.0")) };
        assert!(str_eq("", ""));
        assert!(!str_eq("2.0.0", "2.0.1"), "a differing byte");
        assert!(!str_eq("2.0.0", "2.0.0-rc.1"), "a prefix is not equal");
        assert!(!str_eq("2.0.0-rc.1", "2.0.0"), "nor is a longer string");
        assert!(
            !str_eq("2.0.0", " 2.0.0"),
            "no trimming: the metadata carries the literal"
        );
    }

    const fn write<const N: usize>() -> MetadataWriter<N> {
        MetadataWriter::<N>::new()
            .begin_object()
            .key("id")
            .string("ma_cross")
            .key("n")
            .number(120)
            .key("list")
            .begin_array()
            .string(">=1.0, <2")
            .string("2.x")
            .end_array()
            .key("empty")
            .begin_object()
            .end_object()
            .end_object()
    }

    #[test]
    fn builds_valid_json_at_compile_time() {
        const LEN: usize = write::<0>().len();
        const BYTES: [u8; LEN] = write::<LEN>().finish();
        let value: serde_json::Value = serde_json::from_slice(&BYTES).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": "ma_cross", "n": 120, "list": [">=1.0, <2", "2.x"], "empty": {}})
        );
    }
}
