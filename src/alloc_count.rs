//! A counting wrapper around a global allocator, for the benchmarks (issue 19): how many heap
//! allocations a request costs, and how many bytes. `lark-bridge`'s allocator is mimalloc
//! wrapped in this, counting only once [`enable`]d — with `LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1`
//! in its environment, which `bench/run.sh` sets — because every count is an atomic add on a
//! cache line all workers share. Off, the wrapper costs one relaxed load of a flag that never
//! changes per allocation. On, `/metrics` also shows `lark_bridge_bench_allocations_total` and
//! `lark_bridge_bench_allocated_bytes_total`.
//!
//! Reallocations count as one allocation each (they are calls into the allocator all the same);
//! frees are not counted separately (every allocation of a request is freed by its end).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// `A`, counting every `alloc`, `alloc_zeroed` and `realloc` and the bytes asked for.
pub struct Counting<A>(pub A);

/// Allocations and bytes asked for while counting was on (only when [`Counting`] is the global
/// allocator and [`enable`] was called; zero otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub calls: u64,
    /// Bytes asked for by those calls.
    pub bytes: u64,
}

impl AllocStats {
    /// The counters now.
    pub fn now() -> AllocStats {
        AllocStats {
            calls: CALLS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: AllocStats) -> AllocStats {
        AllocStats {
            calls: self.calls.saturating_sub(earlier.calls),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// Start counting (the benchmarks; `LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1` for the binary).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether counting is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

#[inline]
fn count(bytes: usize) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `A`, which upholds GlobalAlloc's contract; the
// counters are plain atomics and never allocate.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `A` with this layout (every allocation is forwarded to `A`).
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded unchanged; `ptr` came from `A` with `layout`.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}
