//! The client's durable journal: what this plugsync was doing, step by step, so that a
//! plugsync killed at any instant resumes on restart.
//!
//! `reconcile` applies a plan one step at a time. Every transition of a step
//! ([`StepPhase`]) is journaled — appended in its own fsynced transaction — **before** the
//! request it describes is sent to the host: a restarted reconcile reads the steps it had not
//! finished ([`Store::unfinished`]) and, from the exact request it was about to send
//! ([`JournalRecord::request`]), asks the host what became of it (a retried request with the
//! same step id is answered from the host's own record) before it does anything else.
//!
//! # What it holds, and what it does not
//!
//! It holds this client's own intentions and what it saw: the records of its steps, in
//! order, and an index of the steps whose last phase is not terminal. It holds **no shared
//! fact**. The reconcile lease, holds, freezes, failed marks and the applied record live on
//! the host, which enforces them for every client; clients share no disk, and a copy kept here
//! would go stale behind another client's back. What runs is what the host's status says,
//! never what this journal last recorded.
//!
//! # The file
//!
//! `STATE_DIR/journal.redb`, a [redb](https://docs.rs/redb) database (pure Rust; why redb:
//! ARCHITECTURE.md) of four tables: `meta` (the format, [`FORMAT`]), `journal` (seq → the
//! record as JSON), `step_records` (step id → its seqs) and `unfinished` (step id → the seq of
//! its last record, for steps whose last phase is not terminal). An append writes the record
//! and both indexes in one transaction. The directory is `0700` and the file `0600`; either
//! writable by another user is refused, since the journal decides what plugsync sends to the
//! host. One process has the file open at a time (redb holds a lock on it).

mod error;
mod point;

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::ops::Bound;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use redb::{
    Database, DatabaseError, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    StorageError, TableDefinition,
};
use serde::{Deserialize, Serialize};

pub use error::{StoreError, UnknownPhase};
pub use point::{DEFAULT_RETENTION, RollbackPoint, RunningVersion};

/// The journal's format, in its `meta` table. A journal of a newer format is refused.
pub const FORMAT: u64 = 1;

/// The journal's file name in the state directory.
pub const FILE_NAME: &str = "journal.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const JOURNAL: TableDefinition<u64, &str> = TableDefinition::new("journal");
const STEP_RECORDS: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("step_records");
const UNFINISHED: TableDefinition<&str, u64> = TableDefinition::new("unfinished");
/// Rollback points by step id (JSON). Created in journals of format 1 that lack it.
const ROLLBACK_POINTS: TableDefinition<&str, &str> = TableDefinition::new("rollback_points");

/// The read cache: a journal is small, and each record is read about once.
const CACHE_BYTES: usize = 8 << 20;

/// The phase a step is in, as journaled.
///
/// A successful step goes Planned → Preflighted → Staged → SwitchSent → Soaking → CommitSent
/// → Done. One that fails after its switch was sent ends RollbackSent → RolledBack. One that
/// ends before its switch was sent (its preflight failed, a check refused it, the reconcile
/// was stopped) ends Stopped: nothing was sent that the host would have to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepPhase {
    /// The step is in the plan being applied (its planned step in the record's detail).
    Planned,
    /// Its migration was tried outside the host and passed.
    Preflighted,
    /// Its artifact is staged on the host.
    Staged,
    /// The switch is about to be sent (the record holds its exact body).
    SwitchSent,
    /// The host switched; the new version is soaking under the step's lease.
    Soaking,
    /// The commit is about to be sent.
    CommitSent,
    /// The host committed the step.
    Done,
    /// A rollback is about to be sent.
    RollbackSent,
    /// The host rolled the step back.
    RolledBack,
    /// The step ended before its switch was sent.
    Stopped,
}

impl StepPhase {
    /// Every phase, in the order above.
    pub const ALL: [StepPhase; 10] = [
        StepPhase::Planned,
        StepPhase::Preflighted,
        StepPhase::Staged,
        StepPhase::SwitchSent,
        StepPhase::Soaking,
        StepPhase::CommitSent,
        StepPhase::Done,
        StepPhase::RollbackSent,
        StepPhase::RolledBack,
        StepPhase::Stopped,
    ];

    /// Done, RolledBack and Stopped end a step: nothing more will be sent for it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepPhase::Done | StepPhase::RolledBack | StepPhase::Stopped
        )
    }

    /// The kebab-case name (`switch-sent`), as journaled and as `PLUGSYNC_CRASH_AT` names it.
    pub fn name(self) -> &'static str {
        match self {
            StepPhase::Planned => "planned",
            StepPhase::Preflighted => "preflighted",
            StepPhase::Staged => "staged",
            StepPhase::SwitchSent => "switch-sent",
            StepPhase::Soaking => "soaking",
            StepPhase::CommitSent => "commit-sent",
            StepPhase::Done => "done",
            StepPhase::RollbackSent => "rollback-sent",
            StepPhase::RolledBack => "rolled-back",
            StepPhase::Stopped => "stopped",
        }
    }

    /// "`planned`, `preflighted`, …", for [`UnknownPhase`]'s message.
    fn names_for_message() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|p| format!("`{p}`")).collect();
        names.join(", ")
    }
}

impl FromStr for StepPhase {
    type Err = UnknownPhase;

    /// From the kebab-case name.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StepPhase::ALL
            .into_iter()
            .find(|phase| phase.name() == name)
            .ok_or_else(|| UnknownPhase {
                name: name.to_owned(),
            })
    }
}

impl fmt::Display for StepPhase {
    /// The kebab-case name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One transition of one step, journaled before what it describes is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// `{plan_id}.{n}.{attempt}`.
    pub step_id: String,
    /// The plan the step belongs to.
    pub plan_id: String,
    /// The plugin the step changes.
    pub plugin: String,
    /// The phase entered.
    pub phase: StepPhase,
    /// When, in unix milliseconds, by the wall clock (soaks are timed by it; `PLUGSYNC_NOW`,
    /// which moves policy windows, does not move it).
    pub at_ms: i64,
    /// The exact JSON body about to be sent to the host in this phase, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// What else the phase records (the planned step on `Planned`, the host's answer, the
    /// failed check).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// A record as read back, with its place in the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Journaled {
    /// Its place in the journal: 1, 2, …, contiguous.
    pub seq: u64,
    /// The record.
    pub record: JournalRecord,
}

/// The journal, open (and locked against other processes) until dropped.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens the store in `state_dir` (`DIR/journal.redb`), creating the directory `0700` and
    /// the file `0600`. Refuses a directory or file that its group or others can write, a
    /// store another process has open, and a journal of a newer format.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        prepare_dir(state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let file = open_file(&path)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_file(file)
            .map_err(|error| open_error(&path, error))?;
        let store = Store { db, path };
        store.check_format()?;
        Ok(store)
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record in its own durable (fsynced) transaction and returns its seq (1, 2,
    /// …, contiguous). When this returns, the record survives a crash of this process or of
    /// the machine.
    pub fn journal(&self, record: &JournalRecord) -> Result<u64, StoreError> {
        let json = serde_json::to_string(record).map_err(|error| StoreError::Unencodable {
            step_id: record.step_id.clone(),
            reason: error.to_string(),
        })?;
        let action = "append to the journal";
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| self.db_error(action, e))?;
        // Immediate is redb's default; said here because the journal's promise rests on it.
        tx.set_durability(Durability::Immediate)
            .map_err(|e| self.db_error(action, e))?;
        let seq = {
            let mut journal = tx
                .open_table(JOURNAL)
                .map_err(|e| self.db_error(action, e))?;
            let last = journal
                .last()
                .map_err(|e| self.db_error(action, e))?
                .map_or(0, |(seq, _)| seq.value());
            let seq = last + 1;
            journal
                .insert(seq, json.as_str())
                .map_err(|e| self.db_error(action, e))?;
            seq
        };
        {
            let mut steps = tx
                .open_multimap_table(STEP_RECORDS)
                .map_err(|e| self.db_error(action, e))?;
            steps
                .insert(record.step_id.as_str(), seq)
                .map_err(|e| self.db_error(action, e))?;
        }
        {
            let mut unfinished = tx
                .open_table(UNFINISHED)
                .map_err(|e| self.db_error(action, e))?;
            if record.phase.is_terminal() {
                unfinished
                    .remove(record.step_id.as_str())
                    .map_err(|e| self.db_error(action, e))?;
            } else {
                unfinished
                    .insert(record.step_id.as_str(), seq)
                    .map_err(|e| self.db_error(action, e))?;
            }
        }
        tx.commit().map_err(|e| self.db_error(action, e))?;
        Ok(seq)
    }

    /// Every record of one step id, in journal order.
    pub fn step(&self, step_id: &str) -> Result<Vec<Journaled>, StoreError> {
        let action = "read the journal";
        let tx = self.db.begin_read().map_err(|e| self.db_error(action, e))?;
        let steps = tx
            .open_multimap_table(STEP_RECORDS)
            .map_err(|e| self.db_error(action, e))?;
        let journal = tx
            .open_table(JOURNAL)
            .map_err(|e| self.db_error(action, e))?;
        let mut records = Vec::new();
        // A multimap's values come in their order: seqs ascending, i.e. journal order.
        for seq in steps.get(step_id).map_err(|e| self.db_error(action, e))? {
            let seq = seq.map_err(|e| self.db_error(action, e))?.value();
            records.push(self.indexed(&journal, seq, "the index of steps")?);
        }
        Ok(records)
    }

    /// The last record of every step whose last phase is not terminal, in journal order (what
    /// a restarted reconcile must finish first). Kept by an index table updated in the same
    /// transaction as the append, not by scanning the whole journal.
    pub fn unfinished(&self) -> Result<Vec<Journaled>, StoreError> {
        let action = "read the journal";
        let tx = self.db.begin_read().map_err(|e| self.db_error(action, e))?;
        let unfinished = tx
            .open_table(UNFINISHED)
            .map_err(|e| self.db_error(action, e))?;
        let journal = tx
            .open_table(JOURNAL)
            .map_err(|e| self.db_error(action, e))?;
        let mut seqs = Vec::new();
        for entry in unfinished.iter().map_err(|e| self.db_error(action, e))? {
            let (_, seq) = entry.map_err(|e| self.db_error(action, e))?;
            seqs.push(seq.value());
        }
        seqs.sort_unstable();
        seqs.into_iter()
            .map(|seq| self.indexed(&journal, seq, "the index of unfinished steps"))
            .collect()
    }

    /// Records with seq > `after`, in order (history and tests).
    pub fn records(&self, after: u64) -> Result<Vec<Journaled>, StoreError> {
        let action = "read the journal";
        let tx = self.db.begin_read().map_err(|e| self.db_error(action, e))?;
        let journal = tx
            .open_table(JOURNAL)
            .map_err(|e| self.db_error(action, e))?;
        let range = journal
            .range::<u64>((Bound::Excluded(after), Bound::Unbounded))
            .map_err(|e| self.db_error(action, e))?;
        let mut records = Vec::new();
        for entry in range {
            let (seq, json) = entry.map_err(|e| self.db_error(action, e))?;
            records.push(self.parse(seq.value(), json.value())?);
        }
        Ok(records)
    }

    /// Keeps `point` (durably), replacing one of the same step.
    pub fn save_point(&self, point: &RollbackPoint) -> Result<(), StoreError> {
        let action = "keep a rollback point";
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.db_error(action, e))?;
        let seq = {
            let journal = tx
                .open_table(JOURNAL)
                .map_err(|e| self.db_error(action, e))?;
            let last = journal.last().map_err(|e| self.db_error(action, e))?;
            last.map_or(0, |(seq, _)| seq.value())
        };
        let point = RollbackPoint {
            seq,
            ..point.clone()
        };
        let json = serde_json::to_string(&point).map_err(|error| StoreError::Unencodable {
            step_id: point.step_id.clone(),
            reason: error.to_string(),
        })?;
        {
            let mut points = tx
                .open_table(ROLLBACK_POINTS)
                .map_err(|e| self.db_error(action, e))?;
            points
                .insert(point.step_id.as_str(), json.as_str())
                .map_err(|e| self.db_error(action, e))?;
        }
        tx.commit().map_err(|e| self.db_error(action, e))
    }

    /// The rollback points kept (of `plugin`, or all), the last kept first.
    pub fn points(&self, plugin: Option<&str>) -> Result<Vec<RollbackPoint>, StoreError> {
        let action = "read the rollback points";
        let tx = self.db.begin_read().map_err(|e| self.db_error(action, e))?;
        let table = tx
            .open_table(ROLLBACK_POINTS)
            .map_err(|e| self.db_error(action, e))?;
        let mut points = Vec::new();
        for entry in table.iter().map_err(|e| self.db_error(action, e))? {
            let (step_id, json) = entry.map_err(|e| self.db_error(action, e))?;
            let point: RollbackPoint =
                serde_json::from_str(json.value()).map_err(|error| StoreError::CorruptPoint {
                    path: self.path.clone(),
                    step_id: step_id.value().to_owned(),
                    reason: error.to_string(),
                })?;
            if plugin.is_none_or(|plugin| point.plugin == plugin) {
                points.push(point);
            }
        }
        points.sort_by(|a, b| (b.seq, b.at_ms, &b.step_id).cmp(&(a.seq, a.at_ms, &a.step_id)));
        Ok(points)
    }

    /// Drops the rollback points expired at `now_ms`, in one transaction; those dropped,
    /// newest first.
    pub fn gc(&self, now_ms: i64) -> Result<Vec<RollbackPoint>, StoreError> {
        let expired: Vec<RollbackPoint> = (self.points(None)?.into_iter())
            .filter(|point| point.expired(now_ms))
            .collect();
        if expired.is_empty() {
            return Ok(expired);
        }
        let action = "drop expired rollback points";
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.db_error(action, e))?;
        {
            let mut points = tx
                .open_table(ROLLBACK_POINTS)
                .map_err(|e| self.db_error(action, e))?;
            for point in &expired {
                points
                    .remove(point.step_id.as_str())
                    .map_err(|e| self.db_error(action, e))?;
            }
        }
        tx.commit().map_err(|e| self.db_error(action, e))?;
        Ok(expired)
    }

    /// Checks the format in `meta`, or writes it in a new journal (with the empty tables, so
    /// that readers always find them).
    fn check_format(&self) -> Result<(), StoreError> {
        let action = "set up the journal";
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.db_error(action, e))?;
        let tables = tx
            .list_tables()
            .map_err(|e| self.db_error(action, e))?
            .count();
        {
            let mut meta = tx.open_table(META).map_err(|e| self.db_error(action, e))?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(|e| self.db_error(action, e))?
                .map(|format| format.value());
            match found {
                Some(FORMAT) => {}
                Some(found) if found > FORMAT => {
                    return Err(StoreError::NewerFormat {
                        path: self.path.clone(),
                        found,
                        supported: FORMAT,
                    });
                }
                Some(found) => {
                    return Err(StoreError::NotAJournal {
                        path: self.path.clone(),
                        reason: format!("it declares format {found}, which no plugsync wrote"),
                    });
                }
                None if tables > 0 => {
                    return Err(StoreError::NotAJournal {
                        path: self.path.clone(),
                        reason: format!("a redb database of {tables} tables and no `meta` table"),
                    });
                }
                None => {
                    meta.insert(FORMAT_KEY, FORMAT)
                        .map_err(|e| self.db_error(action, e))?;
                }
            }
        }
        tx.open_table(JOURNAL)
            .map_err(|e| self.db_error(action, e))?;
        tx.open_multimap_table(STEP_RECORDS)
            .map_err(|e| self.db_error(action, e))?;
        tx.open_table(UNFINISHED)
            .map_err(|e| self.db_error(action, e))?;
        tx.open_table(ROLLBACK_POINTS)
            .map_err(|e| self.db_error(action, e))?;
        tx.commit().map_err(|e| self.db_error(action, e))
    }

    /// The record an index names, which must be there.
    fn indexed(
        &self,
        journal: &redb::ReadOnlyTable<u64, &'static str>,
        seq: u64,
        index: &str,
    ) -> Result<Journaled, StoreError> {
        let json = journal
            .get(seq)
            .map_err(|e| self.db_error("read the journal", e))?
            .ok_or_else(|| StoreError::CorruptRecord {
                path: self.path.clone(),
                seq,
                reason: format!("{index} names it, and the journal has no such record"),
            })?;
        self.parse(seq, json.value())
    }

    /// A record read back: a corrupt one is an error naming its seq.
    fn parse(&self, seq: u64, json: &str) -> Result<Journaled, StoreError> {
        let record = serde_json::from_str(json).map_err(|error| StoreError::CorruptRecord {
            path: self.path.clone(),
            seq,
            reason: format!("not a journal record: {error}"),
        })?;
        Ok(Journaled { seq, record })
    }

    fn db_error(&self, action: &'static str, error: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            action,
            path: self.path.clone(),
            source: Box::new(error.into()),
        }
    }
}

/// What redb's refusal to open the file means here.
fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    let not_a_journal = |reason: String| StoreError::NotAJournal {
        path: path.to_owned(),
        reason,
    };
    match error {
        DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        DatabaseError::UpgradeRequired(format) => not_a_journal(format!(
            "a redb file of format {format}, older than redb 3 reads"
        )),
        DatabaseError::Storage(StorageError::Corrupted(what)) => {
            not_a_journal(format!("redb cannot read it: {what}"))
        }
        DatabaseError::Storage(StorageError::Io(error))
            if error.kind() == std::io::ErrorKind::InvalidData =>
        {
            not_a_journal(format!("redb cannot read it: {error}"))
        }
        other => StoreError::Database {
            action: "open the journal",
            path: path.to_owned(),
            source: Box::new(other.into()),
        },
    }
}

/// Creates the state directory `0700` if it is missing; refuses one its group or others can
/// write.
/// Creates the state directory `0700` if it is missing, and refuses one others can write.
pub fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                action: "create the state directory",
                path: dir.to_owned(),
                source,
            })?;
    }
    let metadata = std::fs::metadata(dir).map_err(|source| StoreError::Io {
        action: "inspect the state directory",
        path: dir.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(StoreError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StoreError::InsecureDirectory {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Opens (or creates, `0600`) the journal file; refuses one its group or others can write,
/// and anything but a regular file.
fn open_file(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Io {
            action: "open the journal",
            path: path.to_owned(),
            source,
        })?;
    let metadata = file.metadata().map_err(|source| StoreError::Io {
        action: "inspect the journal",
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(StoreError::NotAJournal {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StoreError::InsecureFile {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip_and_match_serde() {
        for phase in StepPhase::ALL {
            assert_eq!(phase.name().parse::<StepPhase>(), Ok(phase));
            assert_eq!(phase.to_string(), phase.name());
            let json = serde_json::to_value(phase).expect("a phase is JSON");
            assert_eq!(json, serde_json::Value::String(phase.name().to_owned()));
        }
    }

    #[test]
    fn all_is_in_declaration_order_and_complete() {
        let mut sorted = StepPhase::ALL;
        sorted.sort();
        assert_eq!(sorted, StepPhase::ALL);
        let terminal: Vec<_> = StepPhase::ALL
            .into_iter()
            .filter(|p| p.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [StepPhase::Done, StepPhase::RolledBack, StepPhase::Stopped]
        );
    }

    #[test]
    fn an_unknown_phase_lists_the_valid_names() {
        let error = "switched".parse::<StepPhase>().unwrap_err();
        expect_test::expect![[r#"`switched` is not a step phase: expected one of `planned`, `preflighted`, `staged`, `switch-sent`, `soaking`, `commit-sent`, `done`, `rollback-sent`, `rolled-back`, `stopped`"#]]
            .assert_eq(&error.to_string());
    }
}
