//! The client's journal (`plugsync::store`): what is appended is read back as written, in
//! order, with contiguous seqs; the unfinished steps are the ones whose last phase is not
//! terminal; nothing acknowledged is lost when the writer is SIGKILLed mid-write; and a
//! journal another user could write, another process holds, or a newer plugsync wrote is
//! refused with its fix.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use expect_test::expect;
use plugsync::store::{FILE_NAME, JournalRecord, Journaled, StepPhase, Store, StoreError};
use serde_json::json;

/// The phases of a step that succeeds, in order.
const SUCCESS: [StepPhase; 7] = [
    StepPhase::Planned,
    StepPhase::Preflighted,
    StepPhase::Staged,
    StepPhase::SwitchSent,
    StepPhase::Soaking,
    StepPhase::CommitSent,
    StepPhase::Done,
];

fn record(step_id: &str, phase: StepPhase, at_ms: i64) -> JournalRecord {
    let plan_id = step_id.split('.').next().unwrap_or_default().to_owned();
    let request = matches!(phase, StepPhase::SwitchSent | StepPhase::CommitSent).then(|| {
        json!({"step_id": step_id, "lease_ms": 60_000, "to": "2.1.0", "origin": {"plan_id": plan_id}})
    });
    let detail = match phase {
        StepPhase::Planned => json!({"from": "2.0.0", "to": "2.1.0", "kind": "minor"}),
        StepPhase::Soaking => json!({"switch": {"stall_us": 41}}),
        _ => serde_json::Value::Null,
    };
    JournalRecord {
        step_id: step_id.to_owned(),
        plan_id,
        plugin: "ma_cross".to_owned(),
        phase,
        at_ms,
        request,
        detail,
    }
}

/// What `unfinished` must say, folded from the whole journal: each step's last record, kept
/// if its phase is not terminal, in journal order.
fn fold_unfinished(records: &[Journaled]) -> Vec<Journaled> {
    let mut last: BTreeMap<&str, &Journaled> = BTreeMap::new();
    for journaled in records {
        last.insert(&journaled.record.step_id, journaled);
    }
    let mut open: Vec<Journaled> = last
        .into_values()
        .filter(|j| !j.record.phase.is_terminal())
        .cloned()
        .collect();
    open.sort_by_key(|j| j.seq);
    open
}

fn seqs(records: &[Journaled]) -> Vec<u64> {
    records.iter().map(|j| j.seq).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The message with the temporary directory's path replaced by `DIR`.
fn message(error: &StoreError, dir: &Path) -> String {
    error.to_string().replace(&dir.display().to_string(), "DIR")
}

#[test]
fn records_read_back_as_written_with_contiguous_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.path(), dir.path().join(FILE_NAME));
    assert_eq!(store.records(0).unwrap(), []);

    let written: Vec<JournalRecord> = SUCCESS
        .iter()
        .enumerate()
        .map(|(i, &phase)| record("p1.1.1", phase, 1_000 + i as i64))
        .collect();
    let given: Vec<u64> = written.iter().map(|r| store.journal(r).unwrap()).collect();
    assert_eq!(given, [1, 2, 3, 4, 5, 6, 7]);

    let read = store.records(0).unwrap();
    assert_eq!(seqs(&read), given);
    let records: Vec<JournalRecord> = read.into_iter().map(|j| j.record).collect();
    assert_eq!(records, written);
    assert_eq!(seqs(&store.records(5).unwrap()), [6, 7]);
    assert_eq!(store.records(7).unwrap(), []);
    assert_eq!(store.records(u64::MAX).unwrap(), []);
    assert_eq!(seqs(&store.step("p1.1.1").unwrap()), given);
    assert_eq!(store.step("p1.1.2").unwrap(), []);
}

#[test]
fn unfinished_is_the_last_record_of_each_step_not_yet_ended() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let unfinished = |store: &Store| -> Vec<(String, StepPhase)> {
        let open = store.unfinished().unwrap();
        assert_eq!(open, fold_unfinished(&store.records(0).unwrap()));
        open.into_iter()
            .map(|j| (j.record.step_id, j.record.phase))
            .collect()
    };

    store
        .journal(&record("p1.1.1", StepPhase::Planned, 1))
        .unwrap();
    store
        .journal(&record("p1.2.1", StepPhase::Planned, 2))
        .unwrap();
    store
        .journal(&record("p1.1.1", StepPhase::SwitchSent, 3))
        .unwrap();
    assert_eq!(
        unfinished(&store),
        [
            ("p1.2.1".to_owned(), StepPhase::Planned),
            ("p1.1.1".to_owned(), StepPhase::SwitchSent),
        ],
        "each step once, by its last record, in journal order"
    );

    // The first attempt rolls back; a second attempt of the same step is another step id.
    store
        .journal(&record("p1.1.1", StepPhase::RollbackSent, 4))
        .unwrap();
    store
        .journal(&record("p1.1.1", StepPhase::RolledBack, 5))
        .unwrap();
    store
        .journal(&record("p1.1.2", StepPhase::Planned, 6))
        .unwrap();
    assert_eq!(
        unfinished(&store),
        [
            ("p1.2.1".to_owned(), StepPhase::Planned),
            ("p1.1.2".to_owned(), StepPhase::Planned),
        ]
    );
    assert_eq!(seqs(&store.step("p1.1.1").unwrap()), [1, 3, 4, 5]);
    assert_eq!(seqs(&store.step("p1.1.2").unwrap()), [6]);

    // A step that reaches Done, and one stopped before its switch, leave it.
    for (at, &phase) in SUCCESS[1..].iter().enumerate() {
        store
            .journal(&record("p1.1.2", phase, 10 + at as i64))
            .unwrap();
    }
    store
        .journal(&record("p1.2.1", StepPhase::Stopped, 20))
        .unwrap();
    assert_eq!(unfinished(&store), []);
}

#[test]
fn a_reopened_store_keeps_everything_and_goes_on_counting() {
    let dir = tempfile::tempdir().unwrap();
    let (before, open_before) = {
        let store = Store::open(dir.path()).unwrap();
        store
            .journal(&record("p1.1.1", StepPhase::Planned, 1))
            .unwrap();
        store
            .journal(&record("p1.1.1", StepPhase::SwitchSent, 2))
            .unwrap();
        store
            .journal(&record("p1.2.1", StepPhase::Planned, 3))
            .unwrap();
        (store.records(0).unwrap(), store.unfinished().unwrap())
    };

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.records(0).unwrap(), before);
    assert_eq!(store.unfinished().unwrap(), open_before);
    assert_eq!(
        store
            .journal(&record("p1.1.1", StepPhase::Soaking, 4))
            .unwrap(),
        4
    );
}

#[test]
fn the_state_dir_is_created_0700_and_the_journal_0600() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/deeper");
    let store = Store::open(&state).unwrap();
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(store.path()), 0o600);
}

#[test]
fn a_state_dir_its_group_or_others_can_write_is_refused() {
    for bits in [0o770, 0o707, 0o720, 0o702] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(bits)).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, StoreError::InsecureDirectory { mode, .. } if *mode == bits),
            "{bits:o}: {error:?}"
        );
        assert!(!dir.path().join(FILE_NAME).exists(), "nothing is created");
        if bits == 0o770 {
            expect![[r#"`DIR` is writable by its group or others (mode 0770): the journal decides what plugsync sends to the host; run `chmod 700 DIR`"#]]
                .assert_eq(&message(&error, dir.path()));
        }
    }
}

#[test]
fn a_journal_its_group_or_others_can_write_is_refused() {
    for bits in [0o660, 0o606] {
        let dir = tempfile::tempdir().unwrap();
        let path = Store::open(dir.path()).unwrap().path().to_owned();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, StoreError::InsecureFile { mode, .. } if *mode == bits),
            "{bits:o}: {error:?}"
        );
        if bits == 0o660 {
            expect![[r#"`DIR/journal.redb` is writable by its group or others (mode 0660): the journal decides what plugsync sends to the host; run `chmod 600 DIR/journal.redb`"#]]
                .assert_eq(&message(&error, dir.path()));
        }
    }
}

#[test]
fn a_state_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, "").unwrap();
    let error = Store::open(&file).unwrap_err();
    expect![[r#"`DIR/state` is not a directory: plugsync keeps its journal in a state directory; give `--state-dir` a directory (or a path where one can be created)"#]]
        .assert_eq(&message(&error, dir.path()));
}

#[test]
fn a_second_open_while_the_first_is_open_is_refused_as_in_use() {
    // redb locks the file (`flock`) per open file, so a second open in this same process is
    // refused as one from another process would be (that one is checked in the kill test).
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");
    expect![[r#"`DIR/journal.redb` is in use: another plugsync uses this state dir; wait for it to finish, or give another `--state-dir`"#]]
        .assert_eq(&message(&error, dir.path()));
    drop(first);
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_journal_of_a_newer_format_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::open(dir.path()).unwrap().path().to_owned();
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("format", plugsync::store::FORMAT + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    expect![[r#"`DIR/journal.redb` is a journal of format 2, and this plugsync reads format 1: a newer plugsync wrote it; use that one, or give another `--state-dir`"#]]
        .assert_eq(&message(&error, dir.path()));
}

#[test]
fn another_redb_database_or_another_file_is_not_taken_for_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, u64>::new("other"))
            .unwrap()
            .insert(1, 1)
            .unwrap();
        tx.commit().unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    expect![[r#"`DIR/journal.redb` is not a plugsync journal (a redb database of 1 tables and no `meta` table): move it aside, or give another `--state-dir`"#]]
        .assert_eq(&message(&error, dir.path()));

    std::fs::write(&path, "plugins:\n  ma_cross: 2.1.0\n".repeat(200)).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    expect!["`DIR/journal.redb` is not a plugsync journal (redb cannot read it: invalid data): move it aside, or give another `--state-dir`"].assert_eq(&message(&error, dir.path()));
}

#[test]
fn a_record_that_does_not_parse_is_an_error_naming_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let store = Store::open(dir.path()).unwrap();
        for (at, &phase) in SUCCESS[..3].iter().enumerate() {
            store.journal(&record("p1.1.1", phase, at as i64)).unwrap();
        }
        store.path().to_owned()
    };
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, &str>::new("journal"))
            .unwrap()
            .insert(2, r#"{"step_id": "p1.1.1", "phase": "switched"#)
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let error = store.records(0).unwrap_err();
    assert!(
        matches!(error, StoreError::CorruptRecord { seq: 2, .. }),
        "{error:?}"
    );
    expect!["record 2 of the journal `DIR/journal.redb` is damaged (not a journal record: EOF while parsing a string at line 1 column 40): move the journal aside (`mv DIR/journal.redb DIR/journal.redb.damaged`), check what the host runs with `plugsync status`, then reconcile again"]
        .assert_eq(&message(&error, dir.path()));
    assert!(matches!(
        store.step("p1.1.1").unwrap_err(),
        StoreError::CorruptRecord { seq: 2, .. }
    ));
    assert_eq!(
        seqs(&store.records(2).unwrap()),
        [3],
        "the records after it still read"
    );
    assert_eq!(seqs(&store.unfinished().unwrap()), [3]);
}

#[test]
fn phase_names_round_trip_and_an_unknown_one_lists_them() {
    for phase in StepPhase::ALL {
        assert_eq!(phase.to_string().parse::<StepPhase>(), Ok(phase));
    }
    expect![[r#"`switch_sent` is not a step phase: expected one of `planned`, `preflighted`, `staged`, `switch-sent`, `soaking`, `commit-sent`, `done`, `rollback-sent`, `rolled-back`, `stopped`"#]]
        .assert_eq(&"switch_sent".parse::<StepPhase>().unwrap_err().to_string());
}

/// Set in the child of the kill test: the state directory it writes into.
const WRITER_ENV: &str = "PLUGSYNC_TEST_JOURNAL_WRITER";
const KILL_TEST: &str = "a_writer_killed_mid_write_loses_no_acknowledged_record";

/// The record the writer appends as `seq`: steps of seven phases, one after another.
fn writer_record(seq: u64) -> JournalRecord {
    let n = (seq - 1) / 7;
    let phase = SUCCESS[((seq - 1) % 7) as usize];
    record(&format!("kill.{n}.1"), phase, seq as i64)
}

/// The child: appends in a tight loop, printing each acknowledged seq, until it is killed
/// (or its parent is gone and the print fails).
fn write_until_killed(state_dir: &Path) {
    let store = Store::open(state_dir).unwrap();
    for seq in 1..=1_000_000 {
        assert_eq!(store.journal(&writer_record(seq)).unwrap(), seq);
        println!("acked {seq}");
    }
}

#[test]
fn a_writer_killed_mid_write_loses_no_acknowledged_record() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        write_until_killed(Path::new(&dir));
        return;
    }
    for round in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", KILL_TEST, "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let want = 200 + 50 * round;
        let mut acknowledged = 0;
        while acknowledged < want {
            let line = lines
                .next()
                .expect("the writer ended before it was killed")
                .unwrap();
            // The test harness writes lines of its own, and `test NAME ... ` before the first.
            if let Some(seq) = line.split("acked ").nth(1) {
                let seq: u64 = seq.trim().parse().unwrap();
                assert_eq!(seq, acknowledged + 1);
                acknowledged = seq;
            }
        }
        // While the writer lives, its journal is another process's.
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");

        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = Store::open(dir.path()).unwrap();
        let records = store.records(0).unwrap();
        let last = records.len() as u64;
        assert!(
            last >= acknowledged,
            "round {round}: {last} records, {acknowledged} acknowledged"
        );
        for journaled in &records {
            assert_eq!(journaled.record, writer_record(journaled.seq));
        }
        assert_eq!(seqs(&records), (1..=last).collect::<Vec<_>>());
        assert_eq!(store.unfinished().unwrap(), fold_unfinished(&records));
        assert_eq!(store.journal(&writer_record(last + 1)).unwrap(), last + 1);
    }
}
