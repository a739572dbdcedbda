//! Code is never unmapped, so what a long-running host accumulates must stay bounded: 500
//! swap and unload/install cycles keep exactly the versions used resident and exactly the
//! instances in use alive; a host thread that called a plugin registering a thread-local
//! destructor exits cleanly after that plugin was unloaded; the resident cap refuses one
//! version too many.

mod support;

use std::sync::mpsc;

use plugsync_host::{CallError, Digest, HostError, Runtime, SwapRequest, TransitionKind};
use serde_json::json;
use support::*;

/// `(live instances of the library of digest, live instances overall, resident libraries)`.
fn counts(runtime: &Runtime, digest: Digest) -> (usize, usize, usize) {
    let status = runtime.status();
    let library = status
        .resident
        .iter()
        .find(|r| r.version.digest == digest)
        .unwrap_or_else(|| panic!("{digest:?} is not resident"));
    (
        library.live_instances,
        status.live_instances,
        status.resident.len(),
    )
}

#[test]
fn five_hundred_swap_and_unload_cycles_keep_resident_versions_and_live_instances_bounded() {
    const CYCLES: u64 = 500;
    let (_dir, runtime) = runtime();
    let risk = [
        install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 1000})),
        stage(&runtime, RISK_MODEL_1_1_0),
    ];
    let ma_cross = [
        install(&runtime, MA_CROSS_1_0_0, json!({})),
        stage(&runtime, MA_CROSS_2_0_0),
    ];
    let mut exposure = 0;
    for cycle in 0..CYCLES {
        let (from, to) = (cycle as usize % 2, (cycle as usize + 1) % 2);

        // risk_model: a fill, then 1.0.0 -> 1.1.0 or back, committed.
        let qty = if cycle % 3 == 0 { -1 } else { 2 };
        exposure += qty;
        runtime
            .call("risk_model", &fill(cycle, "ES", qty, 100.0))
            .unwrap();
        let report = runtime
            .swap(SwapRequest::new("risk_model", risk[to]))
            .unwrap();
        let kind = [TransitionKind::Upgrade, TransitionKind::Downgrade][from];
        assert_eq!(report.kind, kind, "cycle {cycle}");
        // Serving, kept for rollback, and ma_cross: no throwaway instance survives the swap.
        assert_eq!(runtime.status().live_instances, 3, "cycle {cycle}");
        runtime.commit("risk_model").unwrap();
        assert_eq!(counts(&runtime, risk[from]).0, 0, "cycle {cycle}");
        assert_eq!(counts(&runtime, risk[to]).0, 1, "cycle {cycle}");

        // ma_cross: unloaded, then the other version installed.
        let unloaded = runtime.unload("ma_cross").unwrap();
        assert_eq!(unloaded.digest, ma_cross[from]);
        assert_eq!(counts(&runtime, ma_cross[from]).0, 0, "cycle {cycle}");
        assert_eq!(runtime.status().live_instances, 1, "cycle {cycle}");
        runtime.install(&ma_cross[to], json!({})).unwrap();
        runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();

        // Exactly the four versions used are mapped, exactly the two serving are alive.
        let (_, live, resident) = counts(&runtime, ma_cross[to]);
        assert_eq!((live, resident), (2, 4), "cycle {cycle}");
    }
    let state = state(&runtime.snapshot("risk_model").unwrap());
    assert_eq!(state["instruments"]["ES"]["exposure"], exposure);
}

#[test]
fn a_host_thread_that_called_a_plugin_with_a_thread_local_destructor_exits_after_its_unload() {
    let (_dir, runtime) = runtime();
    let tls = install(&runtime, FAULT_TLS, json!({}));
    let risk = install(&runtime, RISK_MODEL_1_0_0, json!({}));
    let handle = runtime.handle("ma_cross").unwrap();
    let (called, on_called) = mpsc::channel();
    let (unloaded, on_unloaded) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let out = handle.call(&bar("ES", 100.0)).unwrap();
        called.send(out.receipt.digest).unwrap();
        on_unloaded.recv().unwrap();
        handle.call(&bar("ES", 101.0))
        // Exits here: the plugin's thread-local destructor runs, in code still mapped.
    });
    assert_eq!(on_called.recv_timeout(DEADLINE).unwrap(), tls);
    let version = runtime.unload("ma_cross").unwrap();
    assert_eq!(version.version, "2.0.6");
    unloaded.send(()).unwrap();
    let after_unload = thread
        .join()
        .expect("the thread that called the unloaded plugin exits cleanly");
    assert_eq!(
        after_unload.unwrap_err(),
        CallError::NotLoaded {
            plugin: "ma_cross".into()
        }
    );
    assert_eq!(counts(&runtime, tls).0, 0, "unloaded, but still mapped");

    // The host carries on: other plugins, and the slot with another version, on other threads.
    let v1 = runtime
        .install(&stage(&runtime, MA_CROSS_1_0_0), json!({}))
        .unwrap();
    let served = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let check = json!({"check": {"order_id": 1, "instrument": "ES", "qty": 1}});
                let risk_out = runtime.call("risk_model", check.to_string().as_bytes());
                let ma_out = runtime.call("ma_cross", &bar("ES", 102.0));
                (
                    risk_out.unwrap().receipt.digest,
                    ma_out.unwrap().receipt.digest,
                )
            })
            .join()
            .unwrap()
    });
    assert_eq!(served, (risk, v1.version.digest));
}

#[test]
fn the_resident_cap_refuses_one_version_too_many() {
    let (_dir, runtime) = runtime_with(|options| options.resident_cap = 2);
    let v1_0 = install(&runtime, RISK_MODEL_1_0_0, json!({}));
    let v1_1 = stage(&runtime, RISK_MODEL_1_1_0);
    let v2_0 = stage(&runtime, RISK_MODEL_2_0_0);
    runtime.swap(SwapRequest::new("risk_model", v1_1)).unwrap();
    runtime.commit("risk_model").unwrap();

    let message = "cannot load `risk_model` 2.0.0: 2 versions of `risk_model` are already mapped \
                   in this host (cap 2) and plugin code is never unmapped; restart the host in a \
                   quiet window to release them, or raise the resident cap";
    let error = runtime
        .swap(SwapRequest::new("risk_model", v2_0))
        .unwrap_err();
    assert!(matches!(error, HostError::ResidentCap { .. }), "{error:?}");
    assert_eq!(error.to_string(), message);
    assert_eq!(runtime.status().plugins[0].version.digest, v1_1);
    assert_eq!(runtime.status().resident_cap, 2);

    // Unloading does not unmap: still refused.
    runtime.unload("risk_model").unwrap();
    let error = runtime.install(&v2_0, json!({})).unwrap_err();
    assert_eq!(error.to_string(), message);

    // A resident version is reused, and the cap is per plugin.
    runtime.install(&v1_0, json!({})).unwrap();
    runtime.swap(SwapRequest::new("risk_model", v1_1)).unwrap();
    install(&runtime, MA_CROSS_1_0_0, json!({}));
    assert_eq!(runtime.status().resident.len(), 3);
}
