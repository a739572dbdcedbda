//! The `extern "C"` entry points behind [`export_plugin!`](crate::export_plugin).
//!
//! Each is generic over the plugin type and instantiated in the plugin's own crate by the
//! macro, so the panic catching runs in the plugin's copy of std: a host's `catch_unwind` could
//! not catch a panic raised by another std, and a panic unwinding out of an `extern "C"`
//! function aborts the process.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::abi::{ByteSlice, HostApi, LogLevel, PluginBuf, Status};
use crate::plugin::{
    Direction, HostContext, HostTime, Migration, MigrationDoc, Plugin, SwapSafety,
};

/// An instance as the host holds it: the plugin and the output buffer its calls reuse.
struct Instance<P> {
    plugin: P,
    output: Vec<u8>,
}

/// Hands a byte vector to the host; it comes back through [`free_buf`].
fn into_buf(bytes: Vec<u8>) -> PluginBuf {
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    PluginBuf {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    }
}

/// The text of a panic payload, when it is one (`panic!` with a message gives a `&str` or a
/// `String`; `panic_any` may give anything).
fn payload_text(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match payload_text(payload) {
        Some(text) => format!("plugin panicked: {text}"),
        None => "plugin panicked".to_owned(),
    }
}

/// The host's services as the host handed them in: a `HostApi` that stays valid for as long as
/// the library is loaded, so `'static` from here. Made only by [`HostRef::from_host`], whose
/// callers pass on the host's guarantee; everything else about it is safe.
#[derive(Clone, Copy)]
pub(crate) struct HostRef(&'static HostApi);

impl HostRef {
    /// Adopts the host's `HostApi`, or `None` for a null pointer.
    ///
    /// # Safety
    ///
    /// `host` must be null or point to a `HostApi` that stays valid and unchanged for as long
    /// as the library is loaded, whose `ctx` its `log` accepts from any thread (the host's
    /// contract for `create`'s and `set_host`'s `host`).
    unsafe fn from_host(host: *const HostApi) -> Option<HostRef> {
        // SAFETY: valid for as long as the library (and so this code) is loaded: per the
        // caller's contract, which is what `'static` means to plugin code.
        unsafe { host.as_ref() }.map(HostRef)
    }

    /// Writes one record through the host's logger.
    pub(crate) fn log(self, level: LogLevel, message: &str) {
        let api = self.0;
        // SAFETY: `api` came from the host through `from_host`, so `log` and `ctx` are the
        // host's and may be called from any thread; the message slice is borrowed for the call.
        unsafe { (api.log)(api.ctx, level as u32, ByteSlice::new(message.as_bytes())) }
    }
}

/// The host services this library's panics are reported through (each plugin library has its
/// own copy of std, so its own panic hook and its own copy of this static).
static PANIC_HOST: AtomicPtr<HostApi> = AtomicPtr::new(std::ptr::null_mut());

/// Routes this library's panic reports (message and location) to the host's logger instead of
/// the default hook's stderr; the panic itself is still caught and returned as an error.
fn report_panics_to(host: Option<HostRef>) {
    static HOOK: Once = Once::new();
    let Some(HostRef(host)) = host else {
        return;
    };
    PANIC_HOST.store(std::ptr::from_ref(host).cast_mut(), Ordering::Release);
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let host = PANIC_HOST.load(Ordering::Acquire);
            // One line: a log record's fields follow its message.
            let message = payload_text(info.payload()).unwrap_or("(a non-string payload)");
            let report = match info.location() {
                Some(at) => format!("plugin panicked at {at}: {message}"),
                None => format!("plugin panicked: {message}"),
            };
            // SAFETY: null, or stored above from a `HostRef`, which met the `from_host` contract.
            match unsafe { HostRef::from_host(host) } {
                Some(host) => host.log(LogLevel::Error, &report),
                None => eprintln!("{report}"),
            }
        }));
    });
}

/// `set_host` entry point (ABI 1.2): the host hands the library its services once, right after
/// mapping it, so that panics are reported through the host's logger from the start — also in
/// `migrate`, which runs before any instance exists and carries no context.
///
/// # Safety
///
/// `host` must be null or point to a `HostApi` that stays valid for as long as the library is
/// loaded, as for [`create`].
pub unsafe extern "C" fn set_host(host: *const HostApi) {
    // Nothing may unwind into the host; there is no error to report if this fails (the hook is
    // then installed by the first `create`, as with a host of ABI 1.1).
    // SAFETY: the host's contract on `host`, documented above, is `from_host`'s.
    let host = unsafe { HostRef::from_host(host) };
    if let Err(payload) = catch_unwind(|| report_panics_to(host)) {
        drop_payload(payload);
    }
}

/// Drops a panic payload without letting a panicking `Drop` escape (`panic_any` takes any
/// type, and its destructor runs plugin code).
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
    }
}

/// Runs `body`, turning its error or panic into a status and a message in `*error`.
///
/// # Safety
///
/// `error` must be null or valid for a write of a `PluginBuf`.
unsafe fn guard(error: *mut PluginBuf, body: impl FnOnce() -> Result<(), String>) -> Status {
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return Status::OK,
        Ok(Err(message)) => (Status::ERROR, message),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            drop_payload(payload);
            (Status::PANIC, message)
        }
    };
    if !error.is_null() {
        // SAFETY: the caller guarantees `error` is valid for writes when non-null.
        unsafe { error.write(into_buf(message.into_bytes())) };
    }
    status
}

/// `create` entry point.
///
/// # Safety
///
/// `config` must be valid for the call; `host` must be null or point to a `HostApi` that stays
/// valid for as long as the library is loaded (instances may hand copies of their
/// [`HostContext`] to other threads); `instance` must be valid for a write; `error` as in
/// `guard`.
pub unsafe extern "C" fn create<P: Plugin>(
    config: ByteSlice,
    host: *const HostApi,
    instance: *mut *mut c_void,
    error: *mut PluginBuf,
) -> Status {
    // SAFETY: the host passes a slice valid for the duration of the call.
    let config = unsafe { config.as_slice() };
    // SAFETY: the host's contract on `host`, documented above, is `from_host`'s.
    let host = unsafe { HostRef::from_host(host) };
    // A host of ABI 1.1 never calls `set_host`: its first `create` installs the hook instead.
    report_panics_to(host);
    let mut created = None;
    let body = || {
        let config = serde_json::from_slice::<P::Config>(config)
            .map_err(|e| format!("invalid config: {e}"))?;
        let context = HostContext { api: host };
        let plugin = P::create(config, &context).map_err(|e| e.to_string())?;
        created = Some(Box::new(Instance {
            plugin,
            output: Vec::new(),
        }));
        Ok(())
    };
    // SAFETY: forwarded contract on `error`.
    let status = unsafe { guard(error, body) };
    if let Some(boxed) = created {
        // SAFETY: the host guarantees `instance` is valid for a write.
        unsafe { instance.write(Box::into_raw(boxed).cast()) };
    }
    status
}

/// `destroy` entry point.
///
/// # Safety
///
/// `instance` must come from [`create`] of the same `P` and not be used afterwards.
pub unsafe extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
    // SAFETY: per the contract, `instance` is a `Box<Instance<P>>` we created and own now.
    let boxed = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    // A panicking `Drop` must not unwind into the host; the instance is gone either way.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(boxed))) {
        drop_payload(payload);
    }
}

/// `call` entry point.
///
/// # Safety
///
/// `instance` must come from [`create`] of the same `P`, with no other call on it running;
/// `input` valid for the call; `output` valid for a write; `error` as in `guard`.
pub unsafe extern "C" fn call<P: Plugin>(
    instance: *mut c_void,
    input: ByteSlice,
    now_ns: i64,
    output: *mut ByteSlice,
    error: *mut PluginBuf,
) -> Status {
    // SAFETY: the host serialises calls on an instance, so this is the only reference to it
    // while the call runs; `input` is valid for the call.
    let (instance, input) = unsafe { (&mut *instance.cast::<Instance<P>>(), input.as_slice()) };
    let body = || {
        instance.output.clear();
        instance
            .plugin
            .call(input, HostTime(now_ns), &mut instance.output)
            .map_err(|e| e.to_string())
    };
    // SAFETY: forwarded contract on `error`.
    let status = unsafe { guard(error, body) };
    if status == Status::OK {
        // SAFETY: `output` is valid for a write; the slice borrows the instance's buffer,
        // untouched until the next call on this instance.
        unsafe { output.write(ByteSlice::new(&instance.output)) };
    }
    status
}

/// `snapshot` entry point.
///
/// # Safety
///
/// `instance` must come from [`create`] of the same `P`, with no call on it running; `out`
/// valid for a write.
pub unsafe extern "C" fn snapshot<P: Plugin>(
    instance: *const c_void,
    out: *mut PluginBuf,
) -> Status {
    // SAFETY: no call mutates the instance while it is snapshotted (contract).
    let instance = unsafe { &*instance.cast::<Instance<P>>() };
    let mut bytes = Vec::new();
    let body = || {
        serde_json::to_writer(&mut bytes, instance.plugin.state())
            .map_err(|e| format!("cannot serialise state: {e}"))
    };
    // SAFETY: `out` is valid for writes (contract); it receives the message on failure.
    let status = unsafe { guard(out, body) };
    if status == Status::OK {
        // SAFETY: `out` is valid for writes (contract).
        unsafe { out.write(into_buf(bytes)) };
    }
    status
}

/// `restore` entry point.
///
/// # Safety
///
/// As [`call`].
pub unsafe extern "C" fn restore<P: Plugin>(
    instance: *mut c_void,
    state: ByteSlice,
    error: *mut PluginBuf,
) -> Status {
    // SAFETY: exclusive access, as for `call`; `state` is valid for the call.
    let (instance, state) = unsafe { (&mut *instance.cast::<Instance<P>>(), state.as_slice()) };
    let body = || {
        let state = serde_json::from_slice::<P::State>(state)
            .map_err(|e| format!("state does not match this version's schema: {e}"))?;
        instance.plugin.restore(state).map_err(|e| e.to_string())
    };
    // SAFETY: forwarded contract on `error`.
    unsafe { guard(error, body) }
}

/// `migrate` entry point. `version` is the library's own version, used to tell up from down.
///
/// # Safety
///
/// Slices valid for the call; `out` valid for a write.
pub unsafe fn migrate<P: Plugin>(
    version: &str,
    document: ByteSlice,
    from: ByteSlice,
    to: ByteSlice,
    out: *mut PluginBuf,
) -> Status {
    // SAFETY: the host passes slices valid for the call.
    let (document, from, to) = unsafe { (document.as_slice(), from.as_slice(), to.as_slice()) };
    let mut bytes = Vec::new();
    let body = || {
        let text = |s: &[u8], what: &str| {
            String::from_utf8(s.to_vec()).map_err(|_| format!("`{what}` version is not UTF-8"))
        };
        let (from, to) = (text(from, "from")?, text(to, "to")?);
        let direction = if to == version {
            Direction::Up
        } else if from == version {
            Direction::Down
        } else {
            return Err(format!(
                "version {version} can only migrate to or from itself, not `{from}` -> `{to}`"
            ));
        };
        let doc: MigrationDoc = serde_json::from_slice(document)
            .map_err(|e| format!("migration document is not {{config, state}} JSON: {e}"))?;
        let migrated = P::migrate(Migration {
            from,
            to,
            direction,
            doc,
        })
        .map_err(|e| e.to_string())?;
        serde_json::to_writer(&mut bytes, &migrated)
            .map_err(|e| format!("cannot serialise migrated document: {e}"))
    };
    // SAFETY: `out` is valid for writes (contract).
    let status = unsafe { guard(out, body) };
    if status == Status::OK {
        // SAFETY: `out` is valid for writes (contract).
        unsafe { out.write(into_buf(bytes)) };
    }
    status
}

/// `health` entry point.
///
/// # Safety
///
/// As [`snapshot`], with `error` as in `guard`.
pub unsafe extern "C" fn health<P: Plugin>(
    instance: *const c_void,
    error: *mut PluginBuf,
) -> Status {
    // SAFETY: no call mutates the instance during the check (contract).
    let instance = unsafe { &*instance.cast::<Instance<P>>() };
    let body = || instance.plugin.health().map_err(|e| e.to_string());
    // SAFETY: forwarded contract on `error`.
    unsafe { guard(error, body) }
}

/// `swap_safe` entry point (ABI 1.3): `OK` when the plugin says a swap is safe now,
/// [`Status::NOT_SAFE`] with its reason in `*reason` when not.
///
/// # Safety
///
/// As [`snapshot`], with `reason` as `guard`'s `error`.
pub unsafe extern "C" fn swap_safe<P: Plugin>(
    instance: *const c_void,
    reason: *mut PluginBuf,
) -> Status {
    // SAFETY: no call mutates the instance while it is asked (contract).
    let instance = unsafe { &*instance.cast::<Instance<P>>() };
    let mut answer = SwapSafety::Safe;
    let body = || {
        answer = instance.plugin.swap_safe();
        Ok(())
    };
    // SAFETY: forwarded contract on `reason`.
    let status = unsafe { guard(reason, body) };
    match answer {
        SwapSafety::NotSafe(why) if status == Status::OK => {
            if !reason.is_null() {
                // SAFETY: the host guarantees `reason` is valid for writes when non-null.
                unsafe { reason.write(into_buf(why.into_bytes())) };
            }
            Status::NOT_SAFE
        }
        _ => status,
    }
}

/// `copy_state` entry point: clones the state into a box the host holds.
///
/// # Safety
///
/// As [`snapshot`]; `copy` valid for a write; `error` as in `guard`.
pub unsafe extern "C" fn copy_state<P: Plugin>(
    instance: *const c_void,
    copy: *mut *mut c_void,
    error: *mut PluginBuf,
) -> Status {
    // SAFETY: no call mutates the instance while it is copied (contract).
    let instance = unsafe { &*instance.cast::<Instance<P>>() };
    let mut made = None;
    let body = || {
        made = Some(Box::new(instance.plugin.state().clone()));
        Ok(())
    };
    // SAFETY: forwarded contract on `error`.
    let status = unsafe { guard(error, body) };
    if let Some(boxed) = made {
        // SAFETY: the host guarantees `copy` is valid for a write.
        unsafe { copy.write(Box::into_raw(boxed).cast()) };
    }
    status
}

/// `serialize_copy` entry point: the JSON of a copy made by [`copy_state`].
///
/// # Safety
///
/// `copy` must come from [`copy_state`] of the same `P` and not be freed yet; `out` valid for
/// a write.
pub unsafe extern "C" fn serialize_copy<P: Plugin>(
    copy: *const c_void,
    out: *mut PluginBuf,
) -> Status {
    // SAFETY: `copy` is a live `Box<P::State>` of ours (contract), only read here.
    let state = unsafe { &*copy.cast::<P::State>() };
    let mut bytes = Vec::new();
    let body = || {
        serde_json::to_writer(&mut bytes, state).map_err(|e| format!("cannot serialise state: {e}"))
    };
    // SAFETY: `out` is valid for writes (contract); it receives the message on failure.
    let status = unsafe { guard(out, body) };
    if status == Status::OK {
        // SAFETY: `out` is valid for writes (contract).
        unsafe { out.write(into_buf(bytes)) };
    }
    status
}

/// `free_copy` entry point.
///
/// # Safety
///
/// `copy` must come from [`copy_state`] of the same `P` and not be used afterwards.
pub unsafe extern "C" fn free_copy<P: Plugin>(copy: *mut c_void) {
    // SAFETY: per the contract, `copy` is a `Box<P::State>` we made and the host gives back.
    let boxed = unsafe { Box::from_raw(copy.cast::<P::State>()) };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(boxed))) {
        drop_payload(payload);
    }
}

/// `free_buf` entry point: frees a buffer this library allocated.
///
/// # Safety
///
/// `buf` must come from this library and not be used afterwards.
pub unsafe extern "C" fn free_buf(buf: PluginBuf) {
    if !buf.ptr.is_null() && buf.cap > 0 {
        // SAFETY: `buf` was made by `into_buf` from a `Vec<u8>` of this allocator.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}

/// Exports a [`Plugin`](crate::Plugin) type as a plugsync plugin library.
///
/// Call it once, at the root of a `cdylib` crate. It builds the metadata JSON at compile time
/// (placed in the `.plugsync` section, readable without running the library) and the vtable the
/// host loads. Plugin code needs no `unsafe`.
///
/// The fields come in this order, each a literal; all are required except `version`:
///
/// - `id`: the plugin id, the slot it fills in a host (`"ma_cross"`);
/// - `version` (optional): the plugin's semantic version. It defaults to the crate's own
///   (`version` in its `Cargo.toml`, `CARGO_PKG_VERSION`); an explicit one that differs from it
///   is a compile error, so the metadata cannot claim another version than the package's;
/// - `kind`: what the plugin is to its host (`"strategy"`, `"risk"`);
/// - `state_schema`: the version of the state schema, an unsigned integer;
/// - `framework`: the semver requirement on the host framework version (a host refuses the
///   library before loading it when its framework does not match);
/// - `dependencies`: `{ "id": "requirement", … }`, other plugins this one needs (may be `{}`);
/// - `migrates_from`: semver requirements on the older versions whose `{config, state}` this
///   version's `migrate` upgrades (may be `[]`);
/// - `downgrades_to`: semver requirements on the older versions this version's `migrate` can
///   turn its document back into (may be `[]`).
///
/// ```
/// # use plugsync_plugin::{HostContext, HostTime, Plugin, PluginError};
/// # pub struct Echo;
/// # impl Plugin for Echo {
/// #     type Config = ();
/// #     type State = ();
/// #     fn create(_: (), _: &HostContext) -> Result<Echo, PluginError> { Ok(Echo) }
/// #     fn call(&mut self, input: &[u8], _: HostTime, output: &mut Vec<u8>) -> Result<(), PluginError> {
/// #         output.extend_from_slice(input);
/// #         Ok(())
/// #     }
/// #     fn state(&self) -> &() { &() }
/// #     fn restore(&mut self, _: ()) -> Result<(), PluginError> { Ok(()) }
/// # }
/// plugsync_plugin::export_plugin!(Echo {
///     id: "echo",
///     // no `version`: the crate's own
///     kind: "strategy",
///     state_schema: 1,
///     framework: ">=0.1, <1",
///     dependencies: {},
///     migrates_from: [],
///     downgrades_to: [],
/// });
/// # fn main() {}
/// ```
///
/// A `version` other than the crate's does not compile (this crate is not version `9.9.9`):
///
/// ```compile_fail,E0080
/// # use plugsync_plugin::{HostContext, HostTime, Plugin, PluginError};
/// # pub struct Echo;
/// # impl Plugin for Echo {
/// #     type Config = ();
/// #     type State = ();
/// #     fn create(_: (), _: &HostContext) -> Result<Echo, PluginError> { Ok(Echo) }
/// #     fn call(&mut self, input: &[u8], _: HostTime, output: &mut Vec<u8>) -> Result<(), PluginError> {
/// #         output.extend_from_slice(input);
/// #         Ok(())
/// #     }
/// #     fn state(&self) -> &() { &() }
/// #     fn restore(&mut self, _: ()) -> Result<(), PluginError> { Ok(()) }
/// # }
/// plugsync_plugin::export_plugin!(Echo {
///     id: "echo",
///     version: "9.9.9",
///     kind: "strategy",
///     state_schema: 1,
///     framework: ">=0.1, <1",
///     dependencies: {},
///     migrates_from: [],
///     downgrades_to: [],
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty {
        id: $id:literal,
        $(version: $version:literal,)?
        kind: $kind:literal,
        state_schema: $schema:literal,
        framework: $framework:literal,
        dependencies: { $($dep:literal : $req:literal),* $(,)? },
        migrates_from: [ $($from:literal),* $(,)? ],
        downgrades_to: [ $($down:literal),* $(,)? ] $(,)?
    }) => {
        // `env!` expands here, in the plugin crate: its `CARGO_PKG_VERSION`, not the SDK's.
        $(
            const _: () = ::core::assert!(
                $crate::__private::str_eq($version, ::core::env!("CARGO_PKG_VERSION")),
                ::core::concat!(
                    "`export_plugin!` declares `version: \"", $version,
                    "\"` but the crate's version (`version` in its Cargo.toml) is `",
                    ::core::env!("CARGO_PKG_VERSION"),
                    "`: leave `version` out (it defaults to the crate's) or make the two agree"
                )
            );
        )?
        const _: () = {
            use $crate::__private::{abi, export, MetadataWriter};

            // The crate's version unless `version` is given (then asserted equal above).
            const VERSION: &str = [$($version,)? ::core::env!("CARGO_PKG_VERSION")][0];

            #[cfg(panic = "unwind")]
            const PANIC: &str = "unwind";
            #[cfg(not(panic = "unwind"))]
            const PANIC: &str = "abort";

            const fn write<const N: usize>() -> MetadataWriter<N> {
                MetadataWriter::<N>::new()
                    .begin_object()
                    .key("abi").number(abi::ABI_MAJOR as u64)
                    .key("abi_minor").number(abi::ABI_MINOR as u64)
                    .key("id").string($id)
                    .key("version").string(VERSION)
                    .key("kind").string($kind)
                    .key("state_schema").number($schema)
                    .key("framework").string($framework)
                    .key("dependencies").begin_object()
                        $( .key($dep).string($req) )*
                    .end_object()
                    .key("migrates_from").begin_array() $( .string($from) )* .end_array()
                    .key("downgrades_to").begin_array() $( .string($down) )* .end_array()
                    .key("build").begin_object()
                        .key("panic").string(PANIC)
                        .key("sdk").string($crate::SDK_VERSION)
                        .key("rustc").string($crate::RUSTC_VERSION)
                    .end_object()
                    .end_object()
            }
            const LEN: usize = write::<0>().len();

            #[used]
            #[unsafe(link_section = ".plugsync")]
            static METADATA: [u8; LEN] = write::<LEN>().finish();

            unsafe extern "C" fn migrate(
                document: abi::ByteSlice,
                from: abi::ByteSlice,
                to: abi::ByteSlice,
                out: *mut abi::PluginBuf,
            ) -> abi::Status {
                // SAFETY: the host upholds the `migrate` contract of the vtable.
                unsafe { export::migrate::<$plugin>(VERSION, document, from, to, out) }
            }

            static VTABLE: abi::PluginVTable = abi::PluginVTable {
                abi_version: abi::ABI_VERSION,
                vtable_size: ::core::mem::size_of::<abi::PluginVTable>() as u32,
                metadata: abi::ByteSlice { ptr: METADATA.as_ptr(), len: LEN },
                create: export::create::<$plugin>,
                destroy: export::destroy::<$plugin>,
                call: export::call::<$plugin>,
                snapshot: export::snapshot::<$plugin>,
                restore: export::restore::<$plugin>,
                migrate,
                health: export::health::<$plugin>,
                free_buf: export::free_buf,
                copy_state: export::copy_state::<$plugin>,
                serialize_copy: export::serialize_copy::<$plugin>,
                free_copy: export::free_copy::<$plugin>,
                set_host: ::core::option::Option::Some(export::set_host),
                swap_safe: ::core::option::Option::Some(export::swap_safe::<$plugin>),
            };

            #[unsafe(no_mangle)]
            extern "C" fn plugsync_plugin_v1() -> *const abi::PluginVTable {
                &VTABLE
            }
        };
    };
}
