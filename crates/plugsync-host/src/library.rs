//! Reading a plugin library's metadata from the file, and opening it.
//!
//! Invariant: nothing is `dlopen`ed before its digest is checked and its metadata section,
//! read from the file bytes with `object`, has passed [`check_metadata`]. `dlopen` runs the
//! library's initialisers, so a library for another ABI major, or an ABI minor older than this
//! host needs, or one built with `panic = "abort"`, is refused without any of its code running.
//! The vtable header is checked again after `dlopen`, as a second line.
//!
//! Invariant: the bytes `dlopen`ed are the bytes hashed. [`Library::open`] takes the bytes the
//! store read and verified (not a path to open again: a file renamed or rewritten between the
//! check and the open would be loaded unverified), copies them into a sealed `memfd` (no
//! write, grow or shrink, not even by us) and `dlopen`s `/proc/self/fd/N`. That memfd stays
//! open for the life of the process: `dlopen` answers a path it has opened before with the
//! library it opened then (measured on glibc 2.36: after fd 3 was closed and reused for library
//! B, `dlopen("/proc/self/fd/3")` returned library A), so a path must never name other bytes.
//! Libraries are never unmapped anyway, and resident libraries are capped per plugin.
//!
//! Invariant: nothing is ever `dlclose`d. Libraries are opened with `RTLD_NODELETE` and the
//! handle is leaked: a plugin that registered a per-thread destructor (any use of
//! `std::thread::current()` or a `thread_local!` with `Drop`) would otherwise leave the host
//! jumping into unmapped code when that thread exits (measured: a segfault).

use std::cell::Cell;
use std::ffi::{CString, c_void};
use std::io::Write;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use object::{Object, ObjectSection};
use plugsync_plugin::PluginMetadata;
use plugsync_plugin::abi::{
    ABI_MAJOR, ByteSlice, ENTRY_SYMBOL, EntryFn, HostApi, METADATA_SECTION, PluginBuf,
    PluginVTable, Status, VTABLE_SIZE_1_1, VTABLE_SIZES,
};

use crate::digest::Digest;
use crate::error::{HostError, Result, io};
use crate::keys::TrustedKeys;
use crate::swap::SwapSafeAnswer;

/// The framework version of this host, matched against each plugin's `framework` requirement.
pub const FRAMEWORK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The oldest ABI minor this host loads. The swap's cut needs 1.1's `copy_state`,
/// `serialize_copy` and `free_copy`; 1.2's `set_host` and 1.3's `swap_safe` are optional
/// (called when present: a library without `swap_safe` counts as always safe to swap).
pub const REQUIRED_ABI_MINOR: u16 = 1;

/// What the loader accepts beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct LoadPolicy {
    /// Accept libraries built with `panic = "abort"` (their first panic kills the host).
    pub allow_panic_abort: bool,
    /// Whose signatures the host trusts. With any key, every artifact must carry a signature
    /// of one of them over its id, version and sha256 ([`signature_payload`]), checked before
    /// every `dlopen` (install, swap, verify, recover); with none, signatures are not checked.
    ///
    /// [`signature_payload`]: crate::signature_payload
    pub trusted_keys: TrustedKeys,
}

/// The effective uid of this process: the owner a store directory must have.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: `geteuid` takes no argument, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Reads a plugin library's metadata from its file without running any of its code.
pub fn inspect(path: &Path) -> Result<PluginMetadata> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    let name = path.display().to_string();
    read_metadata(&name, &bytes)
}

/// As [`inspect`], for a library's bytes already in memory (fetched over HTTP, say); `name`
/// names it in errors.
pub fn inspect_bytes(name: &str, bytes: &[u8]) -> Result<PluginMetadata> {
    read_metadata(name, bytes)
}

/// Parses the `.plugsync` section out of the library bytes.
pub(crate) fn read_metadata(artifact: &str, bytes: &[u8]) -> Result<PluginMetadata> {
    let file = object::File::parse(bytes).map_err(|e| HostError::NotALibrary {
        artifact: artifact.to_owned(),
        reason: e.to_string(),
    })?;
    let section = file
        .section_by_name(METADATA_SECTION)
        .ok_or_else(|| HostError::NoMetadata {
            artifact: artifact.to_owned(),
        })?;
    let data = section.data().map_err(|e| HostError::BadMetadata {
        artifact: artifact.to_owned(),
        reason: e.to_string(),
    })?;
    PluginMetadata::from_json(data).map_err(|e| HostError::BadMetadata {
        artifact: artifact.to_owned(),
        reason: e.to_string(),
    })
}

/// Checks metadata before the library may be opened: ABI (the major, and a minor at least
/// [`REQUIRED_ABI_MINOR`]), panic strategy, framework and that every version it declares is
/// valid semver.
pub(crate) fn check_metadata(metadata: &PluginMetadata, policy: &LoadPolicy) -> Result<()> {
    check_plugin_id(&metadata.id)?;
    check_plain_strings(metadata)?;
    let plugin = || metadata.id.clone();
    let version = || metadata.version.clone();
    if u32::from(metadata.abi) != u32::from(ABI_MAJOR) {
        return Err(HostError::AbiMismatch {
            plugin: plugin(),
            version: version(),
            found: metadata.abi.into(),
            expected: ABI_MAJOR.into(),
        });
    }
    if metadata.abi_minor < REQUIRED_ABI_MINOR {
        return Err(abi_too_old(metadata, metadata.abi_minor));
    }
    if !metadata.unwinds() && !policy.allow_panic_abort {
        return Err(HostError::PanicAbort {
            plugin: plugin(),
            version: version(),
        });
    }
    let bad = |field: &'static str, value: &str, reason: String| HostError::BadVersion {
        plugin: plugin(),
        field,
        value: value.to_owned(),
        reason,
    };
    semver::Version::parse(&metadata.version)
        .map_err(|e| bad("version", &metadata.version, e.to_string()))?;
    let framework = semver::VersionReq::parse(&metadata.framework)
        .map_err(|e| bad("framework", &metadata.framework, e.to_string()))?;
    let host = semver::Version::parse(FRAMEWORK_VERSION).expect("the crate version is semver");
    if !framework.matches(&host) {
        return Err(HostError::FrameworkMismatch {
            plugin: plugin(),
            version: version(),
            required: metadata.framework.clone(),
            host: FRAMEWORK_VERSION.to_owned(),
        });
    }
    for (field, reqs) in [
        ("migrates_from", &metadata.migrates_from),
        ("downgrades_to", &metadata.downgrades_to),
    ] {
        for req in reqs {
            semver::VersionReq::parse(req).map_err(|e| bad(field, req, e.to_string()))?;
        }
    }
    for req in metadata.dependencies.values() {
        semver::VersionReq::parse(req).map_err(|e| bad("dependencies", req, e.to_string()))?;
    }
    Ok(())
}

/// The refusal of a library whose ABI minor (`found`) is older than this host needs.
fn abi_too_old(metadata: &PluginMetadata, found: u16) -> HostError {
    HostError::AbiTooOld {
        plugin: metadata.id.clone(),
        version: metadata.version.clone(),
        major: ABI_MAJOR.into(),
        found: found.into(),
        required: REQUIRED_ABI_MINOR.into(),
    }
}

/// Accepts a plugin id that is safe everywhere an id goes (file names in the store, URLs, log
/// lines): a lowercase letter, then up to 63 lowercase letters, digits or `_`.
pub fn check_plugin_id(id: &str) -> Result<()> {
    let mut bytes = id.bytes();
    let plain = bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && id.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(HostError::BadPluginId {
            id: id.escape_debug().to_string(),
        })
    }
}

/// Refuses metadata strings with control characters: they end up in status, logs and
/// operators' terminals, where they could forge lines or colours.
fn check_plain_strings(metadata: &PluginMetadata) -> Result<()> {
    let strings = [
        ("version", &metadata.version),
        ("kind", &metadata.kind),
        ("framework", &metadata.framework),
        ("build.panic", &metadata.build.panic),
        ("build.sdk", &metadata.build.sdk),
        ("build.rustc", &metadata.build.rustc),
    ];
    let lists = metadata
        .migrates_from
        .iter()
        .map(|v| ("migrates_from", v))
        .chain(metadata.downgrades_to.iter().map(|v| ("downgrades_to", v)))
        .chain(
            metadata
                .dependencies
                .iter()
                .flat_map(|(id, req)| [("dependencies", id), ("dependencies", req)]),
        );
    for (field, value) in strings.into_iter().chain(lists) {
        if value.chars().any(char::is_control) {
            return Err(HostError::ControlCharacter {
                plugin: metadata.id.escape_debug().to_string(),
                field,
            });
        }
    }
    Ok(())
}

/// A failure reported by a plugin entry point.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub panicked: bool,
}

impl Failure {
    /// Names the plugin and operation.
    pub fn into_error(self, library: &Library, operation: &'static str) -> HostError {
        HostError::Plugin {
            plugin: library.metadata.id.clone(),
            version: library.metadata.version.clone(),
            operation,
            message: self.message,
            panicked: self.panicked,
        }
    }
}

/// A library that could not be adopted, and whether it stayed mapped (it then counts against
/// the resident cap: its code can never be unmapped).
#[derive(Debug)]
pub(crate) struct OpenFailure {
    pub error: HostError,
    pub mapped: bool,
}

fn load_error(path: &Path, metadata: &PluginMetadata, reason: String) -> HostError {
    HostError::Load {
        plugin: metadata.id.clone(),
        version: metadata.version.clone(),
        path: path.to_owned(),
        reason,
    }
}

/// A plugin library mapped into this process, for good (see the module docs).
#[derive(Debug)]
pub(crate) struct Library {
    pub digest: Digest,
    pub metadata: PluginMetadata,
    pub version: semver::Version,
    /// Where the verified bytes were read from (the store), for status and errors.
    pub path: PathBuf,
    /// The sealed memfd the library was mapped from. Never closed (module docs): its number,
    /// and so its `/proc/self/fd/N` path, is never reused for other bytes.
    pub memfd: RawFd,
    vtable: &'static PluginVTable,
    /// The host services handed to every instance. Leaked like the library itself: an instance
    /// may give a copy of its context to a thread that outlives it, so it must stay valid for
    /// as long as the code that may use it is mapped, which is for ever.
    host_api: &'static HostApi,
    /// Instances of this library alive now.
    live_instances: AtomicUsize,
}

/// Copies `bytes` into a new memfd and seals it: from here on nobody, this process included,
/// can change, grow or shrink its contents.
fn sealed_copy(bytes: &[u8], name: &str) -> std::io::Result<OwnedFd> {
    // The name only shows in `/proc/<pid>/maps` (as `/memfd:plugsync:<name>`; `Library::open`
    // names it `<short digest>:<file name>`).
    let name = CString::new(format!("plugsync:{name}").replace('\0', "_"))
        .expect("NUL bytes were replaced");
    let create = |flags: libc::c_uint| {
        // SAFETY: `name` is a NUL-terminated string that outlives the call; `memfd_create` only
        // reads it.
        unsafe { libc::memfd_create(name.as_ptr(), flags) }
    };
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // Linux 6.3 asks for an explicit `MFD_EXEC` on a memfd that will be mapped executable;
    // older kernels do not know the flag (`EINVAL`) and allow it anyway.
    let mut fd = create(flags | libc::MFD_EXEC);
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        fd = create(flags);
    }
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by `memfd_create`: it is open and owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: `fcntl(F_ADD_SEALS)` on a descriptor we own, with an integer argument; no memory
    // is passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

impl Library {
    /// Opens a library from the bytes whose digest and metadata have been checked: they are
    /// copied into a sealed memfd and that is what `dlopen` maps (module docs). `path` is where
    /// they were read from, for status and errors.
    pub(crate) fn open(
        bytes: &[u8],
        path: &Path,
        digest: Digest,
        metadata: PluginMetadata,
    ) -> Result<Library, OpenFailure> {
        let not_mapped = |reason: String| OpenFailure {
            error: load_error(path, &metadata, reason),
            mapped: false,
        };
        // `<short digest>:<file name>`: `/proc/<pid>/maps` then says which bytes are mapped
        // (the file name cut short: a memfd's name is at most 249 bytes).
        let name = match path.file_name() {
            Some(file) => {
                let file: String = file.to_string_lossy().chars().take(200).collect();
                format!("{}:{file}", digest.short())
            }
            None => digest.to_string(),
        };
        let memfd = sealed_copy(bytes, &name)
            .map_err(|e| not_mapped(format!("cannot copy it into a sealed memfd: {e}")))?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
        let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE;
        // SAFETY: opening a library runs its initialisers. `bytes` are those whose sha256 was
        // verified against the content-addressed store and whose metadata (ABI, panic
        // strategy) was checked, and the sealed memfd holds exactly them, so it is the plugin
        // the operator approved, built with the plugsync SDK for this ABI. Its path is new to
        // this process (memfds are never closed), so `dlopen` cannot answer with another
        // library. `RTLD_NOW` resolves every symbol now, so a missing one fails here rather
        // than mid-call.
        let library = match unsafe { libloading::os::unix::Library::open(Some(&fd_path), flags) } {
            Ok(library) => library,
            // Nothing was mapped, so nothing refers to the path: the memfd may close (dropped).
            Err(e) => return Err(not_mapped(e.to_string())),
        };
        // Never closed, like the library is never `dlclose`d: see the module docs.
        let memfd = memfd.into_raw_fd();
        // Never `dlclose`, not even on the error paths below: the code stays mapped for the life
        // of the process (module docs), so the handle is never dropped.
        let library = ManuallyDrop::new(library);
        Library::adopt(&library, path, memfd, digest, metadata).map_err(|error| OpenFailure {
            error,
            mapped: true,
        })
    }

    /// Checks a freshly mapped library's entry point and vtable.
    fn adopt(
        library: &libloading::os::unix::Library,
        path: &Path,
        memfd: RawFd,
        digest: Digest,
        metadata: PluginMetadata,
    ) -> Result<Library> {
        let load_error = |reason: String| load_error(path, &metadata, reason);
        // SAFETY: the SDK exports `ENTRY_SYMBOL` with the signature `EntryFn`; a library
        // without it fails the lookup.
        let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }
            .map_err(|e| load_error(format!("no entry point `plugsync_plugin_v1`: {e}")))?;
        // SAFETY: `entry` has the `EntryFn` signature (above); the SDK's entry point only
        // returns a pointer to a static and cannot panic.
        let raw = unsafe { entry() };
        let vtable_ptr = NonNull::new(raw.cast_mut())
            .ok_or_else(|| load_error("the entry point returned a null vtable".into()))?;
        // SAFETY: a vtable starts with two `u32`s (ABI version and size) in every ABI version,
        // so reading them is sound before we know the rest of the layout.
        let (abi_version, vtable_size) = unsafe {
            let header = vtable_ptr.as_ptr().cast::<u32>();
            (header.read(), header.add(1).read())
        };
        if abi_version >> 16 != u32::from(ABI_MAJOR) {
            return Err(HostError::AbiMismatch {
                plugin: metadata.id.clone(),
                version: metadata.version.clone(),
                found: abi_version >> 16,
                expected: ABI_MAJOR.into(),
            });
        }
        // The metadata said a recent enough minor (checked before `dlopen`); the header must too.
        let minor = (abi_version & 0xffff) as u16;
        if minor < REQUIRED_ABI_MINOR {
            return Err(abi_too_old(&metadata, minor));
        }
        if (vtable_size as usize) < VTABLE_SIZE_1_1 {
            return Err(load_error(format!(
                "its vtable has {vtable_size} bytes, this host needs at least {VTABLE_SIZE_1_1} \
                 (ABI {ABI_MAJOR}.{REQUIRED_ABI_MINOR}): rebuild it with a newer plugsync-plugin SDK"
            )));
        }
        // The entries a host may call are those of the minor both the metadata (checked before
        // `dlopen`) and the header declare, read no further than the table the library has.
        let declared = metadata.abi_minor.min(minor);
        let readable = (VTABLE_SIZES.iter())
            .filter(|(minor, size)| *minor <= declared && *size <= vtable_size as usize)
            .map(|(_, size)| *size)
            .max()
            .unwrap_or(VTABLE_SIZE_1_1);
        let vtable: &'static PluginVTable = if readable >= size_of::<PluginVTable>() {
            // SAFETY: the header says it is a vtable of this ABI major and at least as large as
            // ours, and it is static data of a library that is never unmapped.
            unsafe { vtable_ptr.as_ref() }
        } else {
            // An older minor's table is shorter than ours: reading it as ours would read past
            // its end. Its entries are copied into a table of ours whose later (optional)
            // entries stay zero, i.e. `None`; leaked, like the library.
            let mut table = std::mem::MaybeUninit::<PluginVTable>::zeroed();
            // SAFETY: the library's table has at least `readable` bytes (checked above: it is
            // one of the sizes its header's size covers) laid out as the start of ours (a minor
            // only appends); `table` is ours, as large as `PluginVTable`, and the two do not
            // overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    vtable_ptr.as_ptr().cast::<u8>(),
                    table.as_mut_ptr().cast::<u8>(),
                    readable,
                );
            }
            // SAFETY: the first `readable` bytes are the library's valid entries of a minor
            // from 1.1 on; every entry after them is an `Option` of a function pointer
            // (asserted by the SDK), for which all-zero bytes are `None`.
            Box::leak(Box::new(unsafe { table.assume_init() }))
        };
        // SAFETY: the SDK points `metadata` at the static section bytes.
        let vtable_metadata = unsafe { vtable.metadata.as_slice() };
        let vtable_metadata = PluginMetadata::from_json(vtable_metadata)
            .map_err(|e| load_error(format!("its vtable metadata does not parse: {e}")))?;
        if vtable_metadata != metadata {
            return Err(load_error(
                "the metadata in its vtable differs from its `.plugsync` section: the file was \
                 tampered with or built by a broken SDK"
                    .into(),
            ));
        }
        let version =
            semver::Version::parse(&metadata.version).map_err(|e| HostError::BadVersion {
                plugin: metadata.id.clone(),
                field: "version",
                value: metadata.version.clone(),
                reason: e.to_string(),
            })?;
        let log_target: &'static LogTarget = Box::leak(Box::new(LogTarget {
            plugin: metadata.id.clone(),
            version: metadata.version.clone(),
        }));
        let host_api: &'static HostApi = Box::leak(Box::new(HostApi {
            size: std::mem::size_of::<HostApi>(),
            ctx: std::ptr::from_ref(log_target).cast(),
            log: log_record,
        }));
        if let Some(set_host) = vtable.set_host {
            // SAFETY: `host_api` is leaked, so valid for as long as the library is loaded, and
            // its `log` may be called from any thread; this is the first entry point called,
            // as the ABI asks, and the SDK's catches its own panics.
            unsafe { set_host(host_api) };
        }
        Ok(Library {
            digest,
            metadata,
            version,
            path: path.to_owned(),
            memfd,
            vtable,
            host_api,
            live_instances: AtomicUsize::new(0),
        })
    }

    /// Plugin id.
    pub(crate) fn id(&self) -> &str {
        &self.metadata.id
    }

    /// Instances of this library alive now.
    pub(crate) fn live_instances(&self) -> usize {
        self.live_instances.load(Ordering::Relaxed)
    }

    /// Copies a plugin buffer into host memory and gives it back to the plugin.
    fn take(&self, buf: PluginBuf) -> Vec<u8> {
        if buf.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the plugin filled `buf` with `len` initialised bytes it allocated.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
        // SAFETY: `buf` came from this library and is not used after this.
        unsafe { (self.vtable.free_buf)(buf) };
        bytes
    }

    fn failure(&self, status: Status, buf: PluginBuf) -> Failure {
        let message = String::from_utf8_lossy(&self.take(buf)).into_owned();
        Failure {
            message: if message.is_empty() {
                format!("entry point returned status {}", status.0)
            } else {
                message
            },
            panicked: status == Status::PANIC,
        }
    }

    /// Runs the library's `migrate` on a `{config, state}` document.
    pub(crate) fn migrate(
        &self,
        document: &[u8],
        from: &str,
        to: &str,
    ) -> Result<Vec<u8>, Failure> {
        let mut out = PluginBuf::EMPTY;
        // SAFETY: the slices live for the call and `out` is a valid place for the result.
        let status = unsafe {
            (self.vtable.migrate)(
                ByteSlice::new(document),
                ByteSlice::new(from.as_bytes()),
                ByteSlice::new(to.as_bytes()),
                &mut out,
            )
        };
        if status == Status::OK {
            Ok(self.take(out))
        } else {
            Err(self.failure(status, out))
        }
    }
}

/// Where a plugin's log records go: the host's `tracing`, tagged with the plugin.
#[derive(Debug)]
struct LogTarget {
    plugin: String,
    version: String,
}

/// Receives a plugin's log record. Runs host code on a plugin's call, so it must not unwind.
unsafe extern "C" fn log_record(ctx: *const c_void, level: u32, message: ByteSlice) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `ctx` is the `LogTarget` its library leaked (valid for ever); the message
        // slice is valid for this call.
        let (target, message) = unsafe { (&*ctx.cast::<LogTarget>(), message.as_slice()) };
        let message = String::from_utf8_lossy(message);
        let (plugin, version) = (target.plugin.as_str(), target.version.as_str());
        match plugsync_plugin::abi::LogLevel::from_raw(level) {
            plugsync_plugin::abi::LogLevel::Error => tracing::error!(plugin, version, "{message}"),
            plugsync_plugin::abi::LogLevel::Warn => tracing::warn!(plugin, version, "{message}"),
            plugsync_plugin::abi::LogLevel::Info => tracing::info!(plugin, version, "{message}"),
            plugsync_plugin::abi::LogLevel::Debug => tracing::debug!(plugin, version, "{message}"),
        }
    });
}

/// One live plugin instance. Calls on it need `&mut`, so the borrow checker serialises them;
/// dropping it destroys the instance (the library stays mapped).
pub(crate) struct Instance {
    library: std::sync::Arc<Library>,
    ptr: NonNull<c_void>,
    /// An instance is `Send` but not `Sync`: `&self` methods (snapshot, health) rely on no
    /// other thread calling into it at the same time.
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the SDK requires `Plugin: Send`, so the instance behind `ptr` may move between
// threads; `&mut self` on every mutating call keeps calls serialised.
unsafe impl Send for Instance {}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("plugin", &self.library.metadata.id)
            .field("version", &self.library.metadata.version)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Creates an instance with the given config JSON.
    pub(crate) fn create(
        library: std::sync::Arc<Library>,
        config: &[u8],
    ) -> Result<Instance, Failure> {
        let mut raw: *mut c_void = std::ptr::null_mut();
        let mut error = PluginBuf::EMPTY;
        // SAFETY: `config` lives for the call; the library's `host_api` is leaked, so valid for
        // as long as the plugin could use it; `raw` and `error` are valid places for the
        // results.
        let status = unsafe {
            (library.vtable.create)(
                ByteSlice::new(config),
                library.host_api,
                &mut raw,
                &mut error,
            )
        };
        if status != Status::OK {
            return Err(library.failure(status, error));
        }
        let ptr = NonNull::new(raw).ok_or_else(|| Failure {
            message: "`create` returned no instance".into(),
            panicked: false,
        })?;
        library.live_instances.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            library,
            ptr,
            _not_sync: PhantomData,
        })
    }

    /// The library this is an instance of.
    pub(crate) fn library(&self) -> &std::sync::Arc<Library> {
        &self.library
    }

    /// Feeds one input; the output borrows the instance's buffer until the next call.
    pub(crate) fn call(&mut self, input: &[u8], now_ns: i64) -> Result<&[u8], Failure> {
        let mut output = ByteSlice::EMPTY;
        let mut error = PluginBuf::EMPTY;
        // SAFETY: `ptr` is a live instance of this library and `&mut self` makes this the only
        // call on it; `input` lives for the call; `output`/`error` are valid places.
        let status = unsafe {
            (self.library.vtable.call)(
                self.ptr.as_ptr(),
                ByteSlice::new(input),
                now_ns,
                &mut output,
                &mut error,
            )
        };
        if status == Status::OK {
            // SAFETY: on success the plugin points `output` into the instance's buffer, which
            // stays untouched until the next call, and the borrow of `self` outlives no call.
            Ok(unsafe { output.as_slice() })
        } else {
            Err(self.library.failure(status, error))
        }
    }

    /// Snapshots the state as JSON.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>, Failure> {
        let mut out = PluginBuf::EMPTY;
        // SAFETY: `ptr` is a live instance; no call runs on it concurrently (`&self` here and
        // `&mut self` for calls).
        let status = unsafe { (self.library.vtable.snapshot)(self.ptr.as_ptr(), &mut out) };
        if status == Status::OK {
            Ok(self.library.take(out))
        } else {
            Err(self.library.failure(status, out))
        }
    }

    /// Copies the state without serialising it: cheap enough to do while holding the slot,
    /// and the copy is serialised after the slot is released.
    pub(crate) fn copy_state(&self) -> Result<StateCopy, Failure> {
        let mut copy: *mut c_void = std::ptr::null_mut();
        let mut error = PluginBuf::EMPTY;
        // SAFETY: as for `snapshot`; `copy` and `error` are valid places for the results.
        let status =
            unsafe { (self.library.vtable.copy_state)(self.ptr.as_ptr(), &mut copy, &mut error) };
        if status != Status::OK {
            return Err(self.library.failure(status, error));
        }
        let ptr = NonNull::new(copy).ok_or_else(|| Failure {
            message: "`copy_state` returned no copy".into(),
            panicked: false,
        })?;
        Ok(StateCopy {
            library: self.library.clone(),
            ptr,
        })
    }

    /// Replaces the state with a JSON snapshot of this version's schema.
    pub(crate) fn restore(&mut self, state: &[u8]) -> Result<(), Failure> {
        let mut error = PluginBuf::EMPTY;
        // SAFETY: as for `call`.
        let status = unsafe {
            (self.library.vtable.restore)(self.ptr.as_ptr(), ByteSlice::new(state), &mut error)
        };
        if status == Status::OK {
            Ok(())
        } else {
            Err(self.library.failure(status, error))
        }
    }

    /// Asks the instance whether a swap is safe now (ABI 1.3's `swap_safe`).
    pub(crate) fn swap_safe(&self) -> SwapSafeAnswer {
        let Some(swap_safe) = self.library.vtable.swap_safe else {
            return SwapSafeAnswer::Undeclared {
                abi_minor: self.library.metadata.abi_minor,
            };
        };
        let mut reason = PluginBuf::EMPTY;
        // SAFETY: as for `snapshot`; the entry is the library's own (its metadata declares
        // 1.3 and its table holds it).
        let status = unsafe { swap_safe(self.ptr.as_ptr(), &mut reason) };
        match status {
            Status::OK => SwapSafeAnswer::Safe,
            Status::NOT_SAFE => SwapSafeAnswer::NotSafe {
                reason: String::from_utf8_lossy(&self.library.take(reason)).into_owned(),
            },
            _ => SwapSafeAnswer::Failed {
                message: self.library.failure(status, reason).message,
            },
        }
    }

    /// Asks the instance whether it is fit to serve.
    pub(crate) fn health(&self) -> Result<(), Failure> {
        let mut error = PluginBuf::EMPTY;
        // SAFETY: as for `snapshot`.
        let status = unsafe { (self.library.vtable.health)(self.ptr.as_ptr(), &mut error) };
        if status == Status::OK {
            Ok(())
        } else {
            Err(self.library.failure(status, error))
        }
    }
}

/// A copy of an instance's state, owned by the plugin's allocator, independent of the instance.
pub(crate) struct StateCopy {
    library: std::sync::Arc<Library>,
    ptr: NonNull<c_void>,
}

// SAFETY: the SDK requires `Plugin::State: Send`, and the copy is only read (`serialize`) or
// freed, through `&self`/`Drop` of this one owner.
unsafe impl Send for StateCopy {}

impl StateCopy {
    /// The state's JSON.
    pub(crate) fn serialize(&self) -> Result<Vec<u8>, Failure> {
        let mut out = PluginBuf::EMPTY;
        // SAFETY: `ptr` is a live copy made by this library's `copy_state`; `out` is valid.
        let status = unsafe { (self.library.vtable.serialize_copy)(self.ptr.as_ptr(), &mut out) };
        if status == Status::OK {
            Ok(self.library.take(out))
        } else {
            Err(self.library.failure(status, out))
        }
    }
}

impl Drop for StateCopy {
    fn drop(&mut self) {
        // SAFETY: `ptr` is a live copy made by this library's `copy_state`, freed once here.
        unsafe { (self.library.vtable.free_copy)(self.ptr.as_ptr()) };
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `ptr` is a live instance of this library, destroyed exactly once here.
        unsafe { (self.library.vtable.destroy)(self.ptr.as_ptr()) };
        self.library.live_instances.fetch_sub(1, Ordering::Relaxed);
    }
}
