//! What can go wrong with the journal.

use std::path::PathBuf;

use super::StepPhase;

/// The journal could not be opened, read or written. Messages are lowercase, name things in
/// backticks and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory, or a file in it, could not be created, inspected or opened.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// A rollback point that does not read back.
    #[error(
        "the rollback point of step `{step_id}` in `{path}` is corrupt ({reason}); the journal \
         was written by something other than plugsync: move it aside to start afresh"
    )]
    CorruptPoint {
        /// The database file.
        path: PathBuf,
        /// Its step.
        step_id: String,
        /// Why it does not read.
        reason: String,
    },

    /// The state directory's path names something that is not a directory.
    #[error(
        "`{path}` is not a directory: plugsync keeps its journal in a state directory; give \
         `--state-dir` a directory (or a path where one can be created)"
    )]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// A state directory another user could write.
    #[error(
        "`{path}` is writable by its group or others (mode {mode:04o}): the journal decides what \
         plugsync sends to the host; run `chmod 700 {path}`"
    )]
    InsecureDirectory {
        /// The state directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A journal file another user could write.
    #[error(
        "`{path}` is writable by its group or others (mode {mode:04o}): the journal decides what \
         plugsync sends to the host; run `chmod 600 {path}`"
    )]
    InsecureFile {
        /// The journal file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// Another process has the journal open (it holds the database's lock).
    #[error(
        "`{path}` is in use: another plugsync uses this state dir; wait for it to finish, or \
         give another `--state-dir`"
    )]
    InUse {
        /// The journal file.
        path: PathBuf,
    },

    /// A journal written by a newer plugsync, in a format this one does not read.
    #[error(
        "`{path}` is a journal of format {found}, and this plugsync reads format {supported}: \
         a newer plugsync wrote it; use that one, or give another `--state-dir`"
    )]
    NewerFormat {
        /// The journal file.
        path: PathBuf,
        /// The format it declares.
        found: u64,
        /// The format this plugsync reads and writes.
        supported: u64,
    },

    /// A file where the journal should be that is not a plugsync journal.
    #[error(
        "`{path}` is not a plugsync journal ({reason}): move it aside, or give another \
         `--state-dir`"
    )]
    NotAJournal {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A record that does not parse, or an index entry naming a record that is not there.
    #[error(
        "record {seq} of the journal `{path}` is damaged ({reason}): move the journal aside \
         (`mv {path} {path}.damaged`), check what the host runs with `plugsync status`, then \
         reconcile again"
    )]
    CorruptRecord {
        /// The journal file.
        path: PathBuf,
        /// The record's place in the journal.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A record that cannot be written as JSON (a bug: every field is JSON already).
    #[error(
        "cannot journal step `{step_id}`: its record does not encode as JSON ({reason}); this is \
         a bug in plugsync, please report it"
    )]
    Unencodable {
        /// The step.
        step_id: String,
        /// The encoder's words.
        reason: String,
    },

    /// The database failed (the disk, or a file damaged past its own repair).
    #[error("cannot {action} `{path}`: {source}; check the disk (space, errors) and run again")]
    Database {
        /// What was being done.
        action: &'static str,
        /// The journal file.
        path: PathBuf,
        /// redb's error (boxed: rare, and keeps every `Result` small).
        source: Box<redb::Error>,
    },
}

/// A name that is not a [`StepPhase`]'s (in `PLUGSYNC_CRASH_AT`, or a journal of another
/// version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}` is not a step phase: expected one of {}",
    StepPhase::names_for_message()
)]
pub struct UnknownPhase {
    /// The name given.
    pub name: String,
}
