//! What the benchmarks share: finding the built example plugins, the `ma_cross` bar feed, how
//! a percentile and a median are taken, and a seeded generator for generated registries.
#![allow(dead_code)] // each benchmark uses a part of it

use std::f64::consts::TAU;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this is a measuring run (`cargo bench`) rather than a smoke run (`cargo test
/// --benches`, or `cargo bench -- --test`): cargo passes `--bench` only to the former.
pub fn is_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// The directory cargo built this benchmark into the `deps` folder of: `target/release`, where
/// `cargo build --release` puts the plugin cdylibs.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    let deps = exe
        .parent()
        .expect("the benchmark binary lives in a directory");
    assert!(
        deps.ends_with("deps"),
        "expected the benchmark binary in target/<profile>/deps, found {}",
        exe.display()
    );
    deps.parent()
        .expect("deps has a parent: the profile directory")
        .to_owned()
}

/// The built cdylib of an example plugin package (e.g. `ma_cross_v2_0_0`).
///
/// The packages are always (re)built first: `cargo bench` builds them only as rlibs linked into
/// the benchmark, so without this the `.so` could be missing or older than the code the direct
/// baseline runs, and the comparison would not be of the same code. Only the packages asked for
/// are built (a no-op when fresh), so an unrelated package being mid-edit does not stop the
/// benchmark.
pub fn plugin_libraries<const N: usize>(packages: [&str; N]) -> [PathBuf; N] {
    let dir = release_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args(["build", "--release", "--quiet", "--lib"]);
    for package in packages {
        command.args(["--package", package]);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", Path::new(&cargo).display()));
    assert!(
        status.success(),
        "building the example plugins failed ({status}); run `cargo build --release --workspace --lib` to see why"
    );
    packages.map(|package| {
        let path = dir.join(format!("lib{package}.so"));
        assert!(
            path.is_file(),
            "{} is missing although `cargo build --release --package {package}` succeeded",
            path.display()
        );
        path
    })
}

/// Instrument names for a feed: a few real ones, then numbered ones.
pub fn instruments(count: usize) -> Vec<String> {
    const NAMES: [&str; 8] = ["ES", "NQ", "CL", "GC", "ZN", "6E", "RTY", "YM"];
    (0..count)
        .map(|i| match NAMES.get(i) {
            Some(name) => (*name).to_owned(),
            None => format!("FUT{i:03}"),
        })
        .collect()
}

/// Bars per instrument before the feed repeats. The price cycle divides it, so the repeated
/// feed carries on smoothly.
pub const FEED_BARS: usize = 64;

/// `{"bar":{…}}` inputs for `instruments`, interleaved (one bar of each, then the next one of
/// each, …) so that consecutive calls land on different instruments' windows, as a
/// multi-instrument feed does.
pub fn bar_feed(instruments: &[String]) -> Vec<Vec<u8>> {
    let mut feed = Vec::with_capacity(instruments.len() * FEED_BARS);
    for bar in 0..FEED_BARS {
        for (index, name) in instruments.iter().enumerate() {
            feed.push(bar_input(name, index, bar));
        }
    }
    feed
}

/// Bar number `bar` of the instrument at `index`. Each price swings ±2 % over 32 bars, so the
/// averages cross and orders come out now and then, as in real trading, rather than never.
pub fn bar_input(name: &str, index: usize, bar: usize) -> Vec<u8> {
    let base = 100.0 + 37.0 * index as f64;
    let phase = TAU * (bar % FEED_BARS) as f64 / 32.0 + index as f64;
    // Rounded to a cent: prices come on a tick grid.
    let close = (base * (1.0 + 0.02 * phase.sin()) * 100.0).round() / 100.0;
    format!(r#"{{"bar":{{"instrument":"{name}","close":{close}}}}}"#).into_bytes()
}

/// The 1-based rank, in a sample of `len` values sorted ascending, of its nearest-rank
/// percentile `fraction`: the smallest value with at least that fraction of the sample at or
/// below it. Of 400 swaps, p99 is the 396th: the 5th longest. Every percentile the benchmarks
/// print goes through here.
///
/// The fraction is rounded to parts per million before the ceiling: in floating point
/// `0.07 * 100.0` is 7.000000000000001, whose ceiling would be one rank too high.
pub fn nearest_rank(len: u64, fraction: f64) -> u64 {
    let ppm = (fraction.clamp(0.0, 1.0) * 1e6).round() as u64;
    (len * ppm).div_ceil(1_000_000).clamp(1, len.max(1))
}

/// The nearest-rank percentile `fraction` of a sample (the default, zero, for an empty one).
pub fn percentile<T: Copy + Ord + Default>(values: &[T], fraction: f64) -> T {
    if values.is_empty() {
        return T::default();
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[nearest_rank(sorted.len() as u64, fraction) as usize - 1]
}

/// The median of `samples` (the upper one of an even count), sorting them.
pub fn median(samples: &mut [std::time::Duration]) -> std::time::Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// A small seeded generator (SplitMix64): the same generated registry on every run and
/// machine.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A directory registry under `dir/registry` with `libraries` published on `stable`, as an
/// operator's `plugsync publish` makes it.
pub fn publish_stable(libraries: &[PathBuf], dir: &Path) {
    for library in libraries {
        plugsync::ops::publish(&plugsync::ops::PublishOptions {
            library: library.clone(),
            registry: dir.join("registry"),
            channel: plugsync::spec::model::Channel::Stable,
            sign_key: None,
            migrations: None,
        })
        .unwrap_or_else(|e| panic!("publishing {} failed: {e}", library.display()));
    }
}
