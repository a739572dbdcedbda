//! The cost of planning (the target: resolve + plan within 1 s for 1,000 plugins of 100
//! versions each, half of them upgrading along multi-step paths), against the cost of
//! resolving the same set alone.
//!
//! - `resolve_and_plan`: [`resolve::resolve`] of plugins.yaml against the index, then
//!   [`plan::plan`] from it and the host's status — what `reconcile --dry-run` computes
//!   between reading its inputs and previewing migrations (previews off): every upgrading
//!   plugin's version graph and 3 cheapest paths, the order over every plugin (the upgrading
//!   ones and the ones that stay, whose dependencies still count), waves of 4, and the steps,
//!   changes, waits, refusals and warnings;
//! - `resolve_baseline`: [`resolve::resolve`] alone, which any plan needs first.
//!
//! The index is generated from a fixed seed: plugin `i` has 100 versions (`1.0.0` to
//! `10.9.0`); a version of major `M` migrates from the versions of majors `M - 1` and `M`, so
//! an upgrade across majors climbs one major a step; and needs up to three plugins numbered
//! below `i` (upgrading ones) within a window of majors around its own (`>=M-2.0.0, <M+3.0.0`), so a
//! dependant and its dependencies climb together, interleaved. Every other plugin upgrades,
//! from a version in majors 1 to 3 to the highest (`10.9.0`, which plugins.yaml pins): seven
//! to nine steps each. The others already run their highest. The host's status (generated as
//! the JSON a host answers) says what runs. Each benchmark runs with 100, 1,000 and 10,000
//! plugins, to show how the cost grows.
//!
//! After divan's table a measuring run (`cargo bench --bench plan`) prints the medians side by
//! side, and the plan's size (steps, waves).

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use plugsync::plan::{self, PlanInput, SearchLimits};
use plugsync::registry::{IndexEntry, IndexFile};
use plugsync::resolve::{self, Resolution, Update};
use plugsync::spec::model::{Channel, Jump, Metadata, PluginSet, PluginSpec, Registry, Spec};
use plugsync_host::{Digest, PluginMetadata, RuntimeStatus};
use serde_json::json;

/// Versions per plugin.
const VERSIONS: usize = 100;
/// The sizes measured, in plugins.
const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn main() {
    divan::main();
    if common::is_bench_run() {
        print_summary();
    }
}

#[divan::bench(args = SIZES, sample_count = 3, sample_size = 1)]
fn resolve_and_plan(bencher: divan::Bencher<'_, '_>, plugins: usize) {
    let generated = Generated::generate(plugins);
    bencher.bench_local(|| generated.resolve_and_plan());
}

#[divan::bench(args = SIZES, sample_count = 3, sample_size = 1)]
fn resolve_baseline(bencher: divan::Bencher<'_, '_>, plugins: usize) {
    let generated = Generated::generate(plugins);
    bencher.bench_local(|| generated.resolve().plugins.len());
}

/// A generated registry, plugins.yaml and the status of the host running it.
struct Generated {
    set: PluginSet,
    index: BTreeMap<String, IndexFile>,
    /// What the host runs.
    status: RuntimeStatus,
}

fn id(i: usize) -> String {
    format!("p{i:05}")
}

fn version(k: usize) -> String {
    format!("{}.{}.0", k / 10 + 1, k % 10)
}

impl Generated {
    fn generate(plugins: usize) -> Generated {
        let mut random = common::SplitMix(0x0005_eed0_91a2);
        let mut index = BTreeMap::new();
        let mut running = Vec::with_capacity(plugins);
        for i in 0..plugins {
            // The plugins this one needs, the same for all its versions.
            // Only upgrading plugins are needed: a window below a plugin that already runs
            // its highest could never be met on the way up.
            let needs: Vec<usize> = (0..random.below(4))
                .filter(|_| i >= 2)
                .map(|_| 2 * random.below(i.div_ceil(2) as u64) as usize)
                .collect();
            let versions: Vec<IndexEntry> = (0..VERSIONS)
                .map(|k| {
                    let major = k / 10 + 1;
                    let dependencies = needs
                        .iter()
                        .map(|&j| {
                            let low = major.saturating_sub(2).max(1);
                            (id(j), format!(">={low}.0.0, <{}.0.0", major + 3))
                        })
                        .collect();
                    IndexEntry {
                        version: version(k),
                        channel: Channel::Stable,
                        yanked: false,
                        sha256: Digest::of(format!("{} {}", id(i), version(k)).as_bytes()),
                        file: format!("artifacts/{}/{}/lib{}.so", id(i), version(k), id(i)),
                        signature: None,
                        abi: "1.2".to_owned(),
                        framework: ">=0.1.0".to_owned(),
                        kind: "strategy".to_owned(),
                        state_schema: 1,
                        dependencies,
                        migrates_from: vec![format!(
                            ">={}.0.0, <{}.0.0",
                            major.saturating_sub(1).max(1),
                            major + 1
                        )],
                        downgrades_to: Vec::new(),
                        migrations: Vec::new(),
                    }
                })
                .collect();
            // Even plugins upgrade from majors 1 to 3 (where every window holds, so that the
            // starting set is sound and an order exists); odd ones run their highest.
            let runs = if i % 2 == 0 {
                random.below(30) as usize
            } else {
                VERSIONS - 1
            };
            running.push(
                plan::metadata_of(&id(i), &versions[runs]).expect("generated entries are valid"),
            );
            let file = IndexFile {
                plugin: id(i),
                versions,
            };
            index.insert(id(i), file);
        }
        let set = PluginSet {
            api_version: "plugsync/v1".to_owned(),
            kind: "PluginSet".to_owned(),
            metadata: Metadata {
                name: "bench".to_owned(),
                labels: BTreeMap::new(),
            },
            spec: Spec {
                registry: Some(Registry {
                    url: "https://registry.example.com/plugins".to_owned(),
                }),
                plugins: (0..plugins).map(|i| pinned(id(i))).collect(),
                ..Spec::default()
            },
        };
        let status = status(&running);
        Generated { set, index, status }
    }

    fn resolve(&self) -> Resolution {
        let resolution = resolve::resolve(&self.set, &self.index, None, &Update::None)
            .expect("the generated registry always has a solution");
        black_box(resolution)
    }

    /// Resolution, then the plan from it and the host's status: (steps, waves).
    fn resolve_and_plan(&self) -> (usize, usize) {
        let resolution = self.resolve();
        let input = PlanInput {
            set: &self.set,
            resolution: &resolution,
            index: &self.index,
            running: &self.status,
            of_record: &self.set.spec.plugins,
            now: jiff::Timestamp::UNIX_EPOCH,
            limits: SearchLimits::default(),
        };
        let plan = plan::plan(&input).expect("the generated set always has a plan");
        black_box((plan.steps.len(), plan.waves.len()))
    }
}

/// The status a host running `running` answers, each plugin installed by the reconciler.
fn status(running: &[PluginMetadata]) -> RuntimeStatus {
    let config_hash = Digest::of(b"{}");
    let plugins: Vec<serde_json::Value> = running
        .iter()
        .map(|metadata| {
            let digest = Digest::of(format!("{} {}", metadata.id, metadata.version).as_bytes());
            let version = json!({"version": metadata.version, "digest": digest});
            json!({
                "plugin": metadata.id,
                "version": version,
                "config": {},
                "config_hash": config_hash,
                "state_schema": metadata.state_schema,
                "metadata": metadata,
                "health": {"status": "ok"},
                "fault": null,
                "counters": {"calls": 0, "errors": 0, "panics": 0},
                "last_call_at": null,
                "pending": null,
                "last_step": null,
                "last_rollback": null,
                "busy": false,
                "stuck": null,
                "fail_closed": false,
                "applied": {
                    "operation": "install",
                    "step_id": null,
                    "version": version,
                    "config_hash": config_hash,
                    "origin": {"tool": "plugsync-reconcile"},
                    "at": 0,
                    "fresh_state": false,
                },
            })
        })
        .collect();
    serde_json::from_value(json!({
        "abi": 1,
        "framework": "0.1.0",
        "now": 0,
        "plugins": plugins,
        "resident": [],
        "resident_cap": 8,
        "live_instances": running.len(),
        "recovered": null,
        "persist_error": null,
        "lease": {"holder": null, "last_epoch": 0, "breaks": []},
        "restraints": {"freeze": null, "holds": {}, "failed": [], "halts": {}, "forced": []},
        "unloaded": [],
    }))
    .expect("the generated status is a host's status")
}

/// A plugin pinned to its highest version, allowed any jump.
fn pinned(id: String) -> PluginSpec {
    PluginSpec {
        id,
        version: Some(semver::Version::parse(&version(VERSIONS - 1)).expect("a version")),
        channel: None,
        constraint: None,
        allow: Some(Jump::Major),
        config: None,
        strategy: None,
        verify: None,
        update: None,
        on_failure: None,
        migrations: Vec::new(),
    }
}

/// The medians side by side, measured again in interleaved rounds so that a shared machine
/// slowing down affects both alike.
fn print_summary() {
    println!(
        "\nresolve + plan against resolving the same set alone ({VERSIONS} versions per plugin):"
    );
    let mut previous: Option<Duration> = None;
    for plugins in SIZES {
        let generated = Generated::generate(plugins);
        let rounds = if plugins >= 10_000 { 3 } else { 5 };
        let (mut planning, mut resolving) = (Vec::new(), Vec::new());
        let mut size = (0, 0);
        for _ in 0..rounds {
            let start = Instant::now();
            size = generated.resolve_and_plan();
            planning.push(start.elapsed());
            let start = Instant::now();
            black_box(generated.resolve());
            resolving.push(start.elapsed());
        }
        let (plan, resolve) = (
            common::median(&mut planning),
            common::median(&mut resolving),
        );
        let growth = previous.map_or(String::new(), |before| {
            format!(
                ", ×{:.1} for ×10 plugins",
                plan.as_secs_f64() / before.as_secs_f64()
            )
        });
        println!(
            "  {plugins:>6} plugins: resolve + plan {:>9.2} ms ({} steps, {} waves), resolve \
             {:>9.2} ms, ratio {:.2}{growth}",
            plan.as_secs_f64() * 1e3,
            size.0,
            size.1,
            resolve.as_secs_f64() * 1e3,
            plan.as_secs_f64() / resolve.as_secs_f64(),
        );
        previous = Some(plan);
    }
}
