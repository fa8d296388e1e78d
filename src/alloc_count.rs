//! A counting allocator for unit tests: how many allocations the current thread made.
//!
//! Test builds only (`#[cfg(test)]` in `lib.rs`). It wraps the system allocator and counts
//! each allocation (and growth by `realloc`) in a thread-local counter, so that tests running
//! in parallel do not disturb each other's counts; the counter is a const-initialised `Cell`
//! with nothing to drop, so counting itself never allocates. It changes nothing about what is
//! allocated and must not be used outside tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Allocations this thread made since it started.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting.
struct Counting;

fn count() {
    // `try_with`: an allocation made while the thread's locals are torn down is not counted
    // (and must not panic).
    let _ = ALLOCATIONS.try_with(|allocations| allocations.set(allocations.get() + 1));
}

// SAFETY: every call goes to the system allocator with the caller's arguments unchanged; the
// counting beside it touches only a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations (and reallocations) the current thread has made so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// What `work` returns, and how many allocations the current thread made running it.
pub fn allocations_in<R>(work: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations();
    let result = work();
    (result, allocations() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_counted_per_thread() {
        let (_, none) = allocations_in(|| 1 + 1);
        assert_eq!(none, 0);
        let (text, some) = allocations_in(|| "x".repeat(100));
        assert_eq!((text.len(), some), (100, 1));
        // Another thread's allocations are its own.
        let (_, here) = allocations_in(|| {
            std::thread::spawn(|| allocations_in(|| vec![0u8; 64]).1).join().expect("joins")
        });
        let other =
            std::thread::spawn(|| allocations_in(|| vec![0u8; 64]).1).join().expect("joins");
        assert_eq!(other, 1);
        assert!(here >= 1, "spawning a thread allocates here, its vector there");
    }
}
