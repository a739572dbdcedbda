//! `plugsync completions SHELL`, through the real binary: a script for every command, in a form
//! the shell accepts, and clap's own refusal of a shell it does not know.

use std::process::{Command, Output};

fn plugsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugsync"))
        .args(args)
        .output()
        .expect("the plugsync binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The script `plugsync completions shell` prints; it must succeed, saying nothing on stderr.
fn script(shell: &str) -> String {
    let out = plugsync(&["completions", shell]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "{shell}");
    text(&out.stdout)
}

#[test]
fn each_shell_gets_a_script_naming_every_command_and_none_hidden() {
    for shell in ["bash", "zsh", "fish"] {
        let script = script(shell);
        assert!(!script.trim().is_empty(), "{shell}: an empty script");
        for command in [
            "reconcile",
            "rollback",
            "status",
            "history",
            "freeze",
            "release",
            "retry",
            "completions",
        ] {
            assert!(script.contains(command), "{shell}: `{command}` not offered");
        }
        // A flag of a command, not only the command names.
        assert!(
            script.contains("dry-run"),
            "{shell}: `--dry-run` not offered"
        );
        // The internal command stays as hidden as in `--help`.
        assert!(
            !script.contains("preflight-child"),
            "{shell}: the hidden `preflight-child` is offered"
        );
    }
}

#[test]
fn the_bash_script_is_valid_bash() {
    let script = script("bash");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugsync.bash");
    std::fs::write(&path, &script).unwrap();
    match Command::new("bash").arg("-n").arg(&path).output() {
        Ok(checked) => assert!(
            checked.status.success(),
            "bash -n refuses the script: {}",
            text(&checked.stderr)
        ),
        // No bash on this machine: the script's syntax cannot be checked here.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("bash not found: `bash -n` skipped");
        }
        Err(error) => panic!("cannot run bash: {error}"),
    }
}

#[test]
fn an_unknown_shell_is_refused_by_clap_with_exit_2() {
    let out = plugsync(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid value 'tcsh' for '<SHELL>'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[possible values: bash, zsh, fish]"),
        "{stderr}"
    );
}
