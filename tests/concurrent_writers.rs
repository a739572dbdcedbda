//! Two threads committing different plugins at once never lose each other's entry in the
//! store's committed set, and each file is whole: the set is changed and written under one
//! lock, and every file written beside its target has a name of its own.

mod support;

use std::sync::Barrier;

use plugsync_host::{CommittedSet, SwapRequest};
use serde_json::json;
use support::*;

const ROUNDS: u64 = 1_000;

#[test]
fn two_threads_committing_different_plugins_are_both_in_every_committed_set_written() {
    let (store, runtime) = runtime();
    let ma_cross = install(&runtime, MA_CROSS_2_0_0, json!({"order_qty": 1}));
    let risk_model = install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 1}));
    let committed_json = store.path().join("committed.json");
    let both = Barrier::new(2);
    // A reconfigure (the same artifact, another config) is a step like any other.
    let commit = |plugin: &str, artifact, config| {
        both.wait();
        runtime
            .swap(SwapRequest::new(plugin, artifact).config(config))
            .unwrap();
        runtime.commit(plugin).unwrap();
    };
    for round in 2..ROUNDS + 2 {
        std::thread::scope(|scope| {
            scope.spawn(|| commit("ma_cross", ma_cross, json!({"order_qty": round})));
            scope.spawn(|| commit("risk_model", risk_model, json!({"max_position": round})));
        });
        let written: CommittedSet =
            serde_json::from_slice(&std::fs::read(&committed_json).unwrap()).unwrap();
        let configs: Vec<(&str, &serde_json::Value)> = written
            .plugins
            .iter()
            .map(|p| (p.plugin.as_str(), &p.config))
            .collect();
        assert_eq!(
            configs,
            [
                ("ma_cross", &json!({"order_qty": round})),
                ("risk_model", &json!({"max_position": round}))
            ],
            "round {round}"
        );
        assert_eq!(runtime.status().persist_error, None, "round {round}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(store.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
