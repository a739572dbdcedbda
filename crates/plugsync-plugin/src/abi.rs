//! The stable C ABI between a host and a plugin library.
//!
//! Everything here is plain `#[repr(C)]` data. A plugin library exports one symbol,
//! [`ENTRY_SYMBOL`], a function returning a pointer to a static [`PluginVTable`]. The vtable
//! starts with the ABI version and its own size so that a host can refuse a library built for
//! another ABI before it calls anything else. The metadata section carries the same version
//! (`abi`, `abi_minor`), so a host refuses most such libraries before it even maps them.
//!
//! Versioning: a major change breaks the layout; a minor only appends entries to the vtable.
//! 1.1 appended `copy_state`, `serialize_copy` and `free_copy` (required by hosts since); 1.2
//! appended `set_host` and 1.3 `swap_safe`, both optional: a host still loads a 1.1 or 1.2
//! library, treating the entries it lacks as absent, and a newer library runs on an older host
//! (which never calls them).
//!
//! Ownership rule: memory is freed by the side that allocated it. Buffers the plugin hands out
//! ([`PluginBuf`]) are given back to it through [`PluginVTable::free_buf`]; slices the host
//! hands in ([`ByteSlice`]) are only borrowed for the duration of the call. The output of
//! [`PluginVTable::call`] is a slice into a buffer the instance owns and reuses, valid until the
//! next call on the same instance, so the hot path allocates nothing on the host side.

use std::ffi::c_void;

/// Major version of the ABI. A host refuses a library whose major differs.
pub const ABI_MAJOR: u16 = 1;
/// Minor version of the ABI. Minor versions only append entries to the vtable.
pub const ABI_MINOR: u16 = 3;
/// `ABI_MAJOR` and `ABI_MINOR` packed as the vtable stores them: `major << 16 | minor`.
pub const ABI_VERSION: u32 = ((ABI_MAJOR as u32) << 16) | ABI_MINOR as u32;

/// Size of an ABI 1.1 vtable: every entry up to `free_copy`, without 1.2's `set_host`. The
/// smallest table a host that needs 1.1's entries can use.
pub const VTABLE_SIZE_1_1: usize = std::mem::offset_of!(PluginVTable, set_host);

/// Size of an ABI 1.2 vtable: every entry up to `set_host`, without 1.3's `swap_safe`.
pub const VTABLE_SIZE_1_2: usize = std::mem::offset_of!(PluginVTable, swap_safe);

/// The size of the vtable of each ABI minor a host may meet, from 1.1 on, oldest first: a table
/// is read up to the largest of them it holds.
pub const VTABLE_SIZES: [(u16, usize); 3] = [
    (1, VTABLE_SIZE_1_1),
    (2, VTABLE_SIZE_1_2),
    (3, std::mem::size_of::<PluginVTable>()),
];

/// Name of the one symbol a plugin library exports (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"plugsync_plugin_v1\0";

/// Name of the object-file section holding the plugin's metadata JSON, so that tools read it
/// without running plugin code.
pub const METADATA_SECTION: &str = ".plugsync";

/// Signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PluginVTable;

/// Result of every vtable function. A plain integer rather than a Rust enum: a value the host
/// does not know must not be undefined behaviour.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    /// The function succeeded.
    pub const OK: Status = Status(0);
    /// The function failed; the error buffer holds a UTF-8 message.
    pub const ERROR: Status = Status(1);
    /// The plugin panicked; the panic was caught inside the plugin and the error buffer holds
    /// its message. The instance's state is suspect from now on.
    pub const PANIC: Status = Status(2);
    /// `swap_safe` only (ABI 1.3): a swap is not safe now; the error buffer says why (`holds a
    /// position in ES`).
    pub const NOT_SAFE: Status = Status(3);
}

/// A borrowed byte slice crossing the boundary. Valid only for the duration of the call it is
/// passed to (or, for call outputs, until the next call on the same instance).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ByteSlice {
    /// First byte; may dangle when `len` is 0.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl ByteSlice {
    /// An empty slice.
    pub const EMPTY: ByteSlice = ByteSlice {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    /// Borrows `bytes` for the duration of a call.
    pub const fn new(bytes: &[u8]) -> ByteSlice {
        ByteSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Views the bytes.
    ///
    /// # Safety
    ///
    /// `ptr` must point to `len` initialised bytes that stay valid and unmodified for `'a`.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr..ptr+len` is valid for `'a`; `len > 0` so `ptr`
        // is not the dangling pointer of an empty slice.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A buffer allocated by the plugin and handed to the host, which reads it and gives it back
/// through [`PluginVTable::free_buf`] (the plugin may use another allocator than the host).
#[repr(C)]
#[derive(Debug)]
pub struct PluginBuf {
    /// First byte: null for a buffer that owns nothing, dangling when `cap` is 0.
    pub ptr: *mut u8,
    /// Initialised bytes.
    pub len: usize,
    /// Allocated capacity, needed by the plugin to free it.
    pub cap: usize,
}

impl PluginBuf {
    /// A buffer that owns nothing.
    pub const EMPTY: PluginBuf = PluginBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
}

/// What the host gives a plugin library (`set_host`, ABI 1.2) and each instance at creation:
/// its logger. Passed by pointer, the same one per library; the host keeps it alive for as long
/// as the library is loaded (for ever: libraries are never unloaded), since an instance may
/// hand copies of its context to threads that outlive it.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// Size of this struct as the host built it, for forward compatibility.
    pub size: usize,
    /// Opaque host context passed back to every host function.
    pub ctx: *const c_void,
    /// Writes one log record through the host's logger (`level`: see [`LogLevel`]).
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: ByteSlice),
}

// SAFETY: a `HostApi` is immutable after the host builds it; `ctx` points to host data that the
// host requires to be usable from any thread (its `log` may be called from any thread).
unsafe impl Sync for HostApi {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for HostApi {}

/// Log levels as passed to [`HostApi::log`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Something failed.
    Error = 1,
    /// Something is off but the plugin carries on.
    Warn = 2,
    /// Normal operation worth recording.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

impl LogLevel {
    /// Decodes a level received over the ABI; unknown values read as `Info`.
    pub fn from_raw(raw: u32) -> LogLevel {
        match raw {
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            4 => LogLevel::Debug,
            _ => LogLevel::Info,
        }
    }
}

/// The table of entry points a plugin library exports. Every function catches panics inside
/// the plugin and reports them as [`Status::PANIC`]; none unwinds into the host.
///
/// Instance functions take the opaque pointer returned by `create`; calls on one instance must
/// be serialised by the host (an instance is `Send`, not `Sync`).
#[repr(C)]
#[derive(Debug)]
pub struct PluginVTable {
    /// [`ABI_VERSION`] the library was built with.
    pub abi_version: u32,
    /// `size_of::<PluginVTable>()` as the library was built; a host refuses a smaller table.
    pub vtable_size: u32,
    /// The plugin's metadata JSON: the same static bytes as the [`METADATA_SECTION`] section.
    pub metadata: ByteSlice,
    /// Creates an instance from a config JSON document. On success `*instance` is set; on
    /// failure `*error` holds a message.
    pub create: unsafe extern "C" fn(
        config: ByteSlice,
        host: *const HostApi,
        instance: *mut *mut c_void,
        error: *mut PluginBuf,
    ) -> Status,
    /// Destroys an instance. Never fails; a panic inside is caught and swallowed.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Feeds one input to the instance at host time `now_ns` (nanoseconds since the Unix
    /// epoch, given by the host so that replay is deterministic). On success `*output` borrows
    /// the instance's output buffer until the next call on that instance.
    pub call: unsafe extern "C" fn(
        instance: *mut c_void,
        input: ByteSlice,
        now_ns: i64,
        output: *mut ByteSlice,
        error: *mut PluginBuf,
    ) -> Status,
    /// Serialises the instance's state as JSON into `*out` (on failure, a message).
    pub snapshot: unsafe extern "C" fn(instance: *const c_void, out: *mut PluginBuf) -> Status,
    /// Replaces the instance's state with the given JSON state.
    pub restore: unsafe extern "C" fn(
        instance: *mut c_void,
        state: ByteSlice,
        error: *mut PluginBuf,
    ) -> Status,
    /// Migrates a `{"config": …, "state": …}` document from version `from` to version `to`
    /// (up, or down where the plugin offers it). Needs no instance.
    pub migrate: unsafe extern "C" fn(
        document: ByteSlice,
        from: ByteSlice,
        to: ByteSlice,
        out: *mut PluginBuf,
    ) -> Status,
    /// Reports health: `OK` when healthy, `ERROR` with a reason otherwise.
    pub health: unsafe extern "C" fn(instance: *const c_void, error: *mut PluginBuf) -> Status,
    /// Frees a buffer this library allocated.
    pub free_buf: unsafe extern "C" fn(buf: PluginBuf),
    /// Copies the instance's state without serialising it (a clone), so that the host can
    /// serialise it later without holding the instance: `*copy` receives an opaque copy, freed
    /// by `free_copy`. Added in ABI 1.1.
    pub copy_state: unsafe extern "C" fn(
        instance: *const c_void,
        copy: *mut *mut c_void,
        error: *mut PluginBuf,
    ) -> Status,
    /// Serialises a copy made by `copy_state` as JSON into `*out` (on failure, a message).
    pub serialize_copy: unsafe extern "C" fn(copy: *const c_void, out: *mut PluginBuf) -> Status,
    /// Frees a copy made by `copy_state`.
    pub free_copy: unsafe extern "C" fn(copy: *mut c_void),
    /// Gives the library its host services once, right after the host maps it and before any
    /// other entry point: the SDK reports the library's panics (message and location) through
    /// `host`'s logger from then on, including panics in `migrate`, which has no instance and
    /// no context of its own. Same lifetime contract as `create`'s `host`: valid for as long
    /// as the library is loaded. Never fails; a panic inside is caught and swallowed.
    ///
    /// Added in ABI 1.2, and optional: `None`, or absent from a smaller (1.1) table, means the
    /// library wants nothing (its panics are then reported from its first `create` on).
    pub set_host: Option<unsafe extern "C" fn(host: *const HostApi)>,
    /// Whether swapping the instance now is safe for what it trades: `OK` when it is (no
    /// position, no working order), [`Status::NOT_SAFE`] with the reason in `*reason` when it
    /// is not, `ERROR` or `PANIC` when it cannot say. A `when-flat` switch is made only on
    /// `OK`, asked under the slot lock right before the switch; the instance is not mutated.
    ///
    /// Added in ABI 1.3, and optional: `None`, or absent from an older table, means the plugin
    /// cannot say, and a host counts it as always safe.
    pub swap_safe:
        Option<unsafe extern "C" fn(instance: *const c_void, reason: *mut PluginBuf) -> Status>,
}

/// A function pointer's size: every entry appended after 1.1 is an `Option` of one.
const ENTRY: usize = std::mem::size_of::<Option<unsafe extern "C" fn()>>();

// Every entry a minor appended after 1.1 must be valid when all-zero bytes (`Option` of a
// function pointer: `None`), because a host completes an older table with zeroes.
const _: () = assert!(
    VTABLE_SIZE_1_2 == VTABLE_SIZE_1_1 + ENTRY
        && std::mem::size_of::<PluginVTable>() == VTABLE_SIZE_1_2 + ENTRY
        && std::mem::size_of::<Option<unsafe extern "C" fn(*const HostApi)>>() == ENTRY
        && std::mem::size_of::<Option<unsafe extern "C" fn(*const c_void, *mut PluginBuf) -> Status>>(
        ) == ENTRY,
    "an entry appended after 1.1 must be an `Option` of a function pointer"
);

// SAFETY: a vtable is immutable static data: function pointers and a pointer to static
// metadata bytes that are never written. Sharing it between threads is sound.
unsafe impl Sync for PluginVTable {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for PluginVTable {}
