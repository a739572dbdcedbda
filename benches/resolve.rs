//! The cost of resolving a plugins.yaml against a registry's index (the target: at most 1 s for
//! 1,000 plugins of 100 versions each), against the cost of parsing that index alone.
//!
//! - `resolve`: [`plugsync::resolve::resolve`] with no lock, every plugin on `stable`, the index
//!   already parsed;
//! - `parse_index_baseline`: `serde_json` of every plugin's `index/<id>.json` from bytes in
//!   memory, which any resolution needs first: how much resolving adds to reading.
//!
//! The index is generated from a fixed seed: plugin `i` has 100 versions (`1.0.0` to
//! `10.9.0`), one in ten on `beta` and one in fifty yanked, each depending on up to three
//! plugins numbered below `i` with a requirement (`>=X.Y.0`, `>=X.Y.0, <11`, `^X`) that the
//! dependency's highest stable version meets — so a solution always exists, with every plugin
//! at its highest stable version, as in a healthy registry. Each benchmark runs with 100,
//! 1,000 and 10,000 plugins, to show how the cost grows.
//!
//! After divan's table a measuring run (`cargo bench --bench resolve`) prints the medians side
//! by side: resolve and parse per size, their ratio, and the growth per tenfold.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use plugsync::registry::{IndexEntry, IndexFile};
use plugsync::resolve::{self, Update};
use plugsync::spec::model::{Channel, Metadata, PluginSet, PluginSpec, Registry, Spec};
use plugsync_host::Digest;

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

#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn resolve(bencher: divan::Bencher<'_, '_>, plugins: usize) {
    let registry = Generated::generate(plugins);
    bencher.bench_local(|| registry.resolve());
}

#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn parse_index_baseline(bencher: divan::Bencher<'_, '_>, plugins: usize) {
    let registry = Generated::generate(plugins);
    bencher.bench_local(|| registry.parse());
}

/// A generated registry, as parsed and as the bytes of its index files.
struct Generated {
    set: PluginSet,
    index: BTreeMap<String, IndexFile>,
    files: Vec<Vec<u8>>,
}

impl Generated {
    fn generate(plugins: usize) -> Generated {
        let mut random = common::SplitMix(0x0005_eed0_f1e5);
        let id = |i: usize| format!("p{i:05}");
        let version = |k: usize| format!("{}.{}.0", k / 10 + 1, k % 10);
        let mut index = BTreeMap::new();
        for i in 0..plugins {
            let versions = (0..VERSIONS)
                .map(|k| {
                    let mut dependencies = BTreeMap::new();
                    for _ in 0..random.below(4) {
                        if i == 0 {
                            break;
                        }
                        let dependency = random.below(i as u64) as usize;
                        // A lower bound among the first half of its versions, all stable at
                        // the top: the highest stable version always meets it.
                        let floor = random.below(VERSIONS as u64 / 2) as usize;
                        let (major, minor) = (floor / 10 + 1, floor % 10);
                        let requirement = match random.below(3) {
                            0 => format!(">={major}.{minor}.0"),
                            1 => format!(">={major}.{minor}.0, <11"),
                            _ => format!(">={major}"),
                        };
                        dependencies.insert(id(dependency), requirement);
                    }
                    // The top version stays stable and published, so the solution is every
                    // plugin's highest.
                    let top = k == VERSIONS - 1;
                    IndexEntry {
                        version: version(k),
                        channel: if !top && k % 10 == 7 {
                            Channel::Beta
                        } else {
                            Channel::Stable
                        },
                        yanked: !top && k % 50 == 13,
                        sha256: Digest::of(format!("{} {}", id(i), version(k)).as_bytes()),
                        file: format!("artifacts/{}/{}/lib{}.so", id(i), version(k), id(i)),
                        signature: None,
                        abi: "1.2".to_owned(),
                        framework: ">=0.1.0".to_owned(),
                        kind: "strategy".to_owned(),
                        state_schema: 1,
                        dependencies,
                        migrates_from: vec![">=1.0.0".to_owned()],
                        downgrades_to: Vec::new(),
                        migrations: Vec::new(),
                    }
                })
                .collect();
            let file = IndexFile {
                plugin: id(i),
                versions,
            };
            index.insert(id(i), file);
        }
        let files = index
            .values()
            .map(|file| serde_json::to_vec(file).expect("an index file serialises"))
            .collect();
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
                plugins: (0..plugins).map(|i| follow(id(i))).collect(),
                ..Spec::default()
            },
        };
        Generated { set, index, files }
    }

    fn resolve(&self) -> usize {
        let resolution = resolve::resolve(&self.set, &self.index, None, &Update::None)
            .expect("the generated registry always has a solution");
        black_box(resolution).plugins.len()
    }

    fn parse(&self) -> usize {
        let parsed: Vec<IndexFile> = self
            .files
            .iter()
            .map(|bytes| serde_json::from_slice(bytes).expect("a generated index file parses"))
            .collect();
        black_box(parsed).len()
    }
}

/// A plugin that follows `stable`, with nothing else said.
fn follow(id: String) -> PluginSpec {
    PluginSpec {
        id,
        version: None,
        channel: Some(Channel::Stable),
        constraint: None,
        allow: None,
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
    println!("\nresolve against parsing the index alone ({VERSIONS} versions per plugin):");
    let mut previous: Option<Duration> = None;
    for plugins in SIZES {
        let registry = Generated::generate(plugins);
        let rounds = if plugins >= 10_000 { 3 } else { 7 };
        let (mut resolving, mut parsing) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            resolving.push(time(|| registry.resolve()));
            parsing.push(time(|| registry.parse()));
        }
        let (resolve, parse) = (common::median(&mut resolving), common::median(&mut parsing));
        let growth = previous.map_or(String::new(), |before| {
            format!(
                ", ×{:.1} for ×10 plugins",
                resolve.as_secs_f64() / before.as_secs_f64()
            )
        });
        println!(
            "  {plugins:>6} plugins: resolve {:>9.2} ms, parse {:>9.2} ms, ratio {:.2}{growth}",
            resolve.as_secs_f64() * 1e3,
            parse.as_secs_f64() * 1e3,
            resolve.as_secs_f64() / parse.as_secs_f64(),
        );
        previous = Some(resolve);
    }
}

fn time(run: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    black_box(run());
    start.elapsed()
}
