//! What `swap_stall` and `control_api` share to see a swap from the callers' side: windows the
//! main thread opens, the longest call that overlapped each, and each call's time queued for a
//! CPU (so that the machine's scheduling can be told from the swap's stall).
#![allow(dead_code)] // each benchmark uses a part of it

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Time each window starts with before the main thread acts (swaps, or spins): by then every
/// call begun before the window has ended, unless it lost its CPU, so the calls that can have
/// waited for the swap all started inside the window, where callers measure their CPU queueing.
pub const LEAD_IN: Duration = Duration::from_micros(50);

/// What the callers report about each window the main thread opens.
///
/// Window `w` is open while `epoch` is `2w + 1`. A caller reads the epoch before and after each
/// call: every window open at some point between the two readings overlapped the call. Callers
/// touch the shared window counters only for such calls, so outside windows the probe costs
/// two reads of a line written twice per window.
pub struct Probe {
    /// `2w + 1` while window `w` is open.
    pub epoch: AtomicU64,
    /// Index into the bench's load levels: how the callers pace their calls.
    pub load: AtomicUsize,
    /// Set when the callers must stop.
    pub stop: AtomicBool,
    windows: Vec<WindowStats>,
}

#[derive(Default)]
struct WindowStats {
    /// Longest wall time of a call.
    longest_wall_ns: AtomicU64,
    /// Longest wall time of a call minus the time it spent queued for a CPU.
    longest_net_ns: AtomicU64,
    /// Calls whose CPU queueing was measured.
    net_calls: AtomicU64,
}

/// What the callers saw of one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// Longest wall time of a call overlapping the window.
    pub longest_wall: Duration,
    /// `None` when no call was measured in the window: the callers had no CPU throughout, so
    /// the window says nothing about the swap.
    pub longest_net: Option<Duration>,
}

impl Probe {
    pub fn new(windows: usize) -> Probe {
        Probe {
            epoch: AtomicU64::new(0),
            load: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            windows: (0..windows).map(|_| WindowStats::default()).collect(),
        }
    }

    /// Runs `body` as window `window`, after the lead-in.
    pub fn window<R>(&self, window: usize, body: impl FnOnce() -> R) -> R {
        let epoch = 2 * window as u64;
        self.epoch.store(epoch + 1, Ordering::SeqCst);
        spin_for(LEAD_IN);
        let result = body();
        self.epoch.store(epoch + 2, Ordering::SeqCst);
        result
    }

    /// Records a call that overlapped the windows open between the two epoch readings. `net`
    /// is `None` for a call whose CPU queueing was not measured (flat out, one begun before
    /// its window).
    pub fn observe(&self, epoch_before: u64, epoch_after: u64, wall: u64, net: Option<u64>) {
        let mut epoch = epoch_before | 1;
        while epoch <= epoch_after {
            let stats = &self.windows[(epoch / 2) as usize];
            stats.longest_wall_ns.fetch_max(wall, Ordering::Relaxed);
            if let Some(net) = net {
                stats.longest_net_ns.fetch_max(net, Ordering::Relaxed);
                stats.net_calls.fetch_add(1, Ordering::Relaxed);
            }
            epoch += 2;
        }
    }

    /// What the callers saw of `window`. Read after they stopped.
    pub fn seen(&self, window: usize) -> Seen {
        let stats = &self.windows[window];
        let nanos = |n: &AtomicU64| Duration::from_nanos(n.load(Ordering::Relaxed));
        Seen {
            longest_wall: nanos(&stats.longest_wall_ns),
            longest_net: (stats.net_calls.load(Ordering::Relaxed) > 0)
                .then(|| nanos(&stats.longest_net_ns)),
        }
    }
}

/// Spins (does not sleep: a wake-up would take longer than the gap) for `duration`.
pub fn spin_for(duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// The calling thread's total time runnable but not running (queued for a CPU: preempted, or
/// woken and not yet scheduled), from `/proc/thread-self/schedstat` (Linux, about 1 µs a read).
///
/// On two shared cores with three busy threads, a caller regularly loses its CPU for a
/// scheduler slice (milliseconds) whether or not a swap runs. Subtracting this from a call's
/// wall time leaves what the swap can cause: waiting for the slot lock, and the call's own work.
pub struct CpuQueueing {
    file: Option<std::fs::File>,
}

impl CpuQueueing {
    /// Opened by the thread it measures: `thread-self` is resolved at open.
    pub fn for_this_thread() -> CpuQueueing {
        CpuQueueing {
            file: std::fs::File::open("/proc/thread-self/schedstat").ok(),
        }
    }

    pub fn total_ns(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let len = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        // "<on-CPU ns> <queued ns> <timeslices>"
        std::str::from_utf8(&buf[..len])
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}
