//! The C allocator's arenas, bounded by the machine's cores rather than a run's threads.
//!
//! glibc's `malloc` gives threads arenas of their own, up to eight per core, and keeps
//! what is freed in each for that arena's next allocations. A run's workers build batches
//! and free the ones they are handed, so each worker's arena grows to the batches it has
//! seen: the `prep` bench's pipeline peaked at 50 MB with 1 worker, 94 MB with 8 and
//! 100 MB with 16 (2 cores; batches in flight 8–22 MB throughout), and at 65–69 MB with
//! any count under two arenas, no slower. So before its pool starts, a run limits the
//! arenas to the cores (at least two), unless the process was told otherwise
//! (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`). The setting is
//! the process's, and only limits arenas made after it; other allocators and systems are
//! left alone.

/// Limits glibc's arenas to the machine's cores, once per process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn bound_arenas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let told = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if told {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).clamp(2, 1024);
        // SAFETY: `mallopt` changes a setting of glibc's allocator under the allocator's own
        // lock; it may be called at any time from any thread, and takes no pointer.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int) };
        if ok != 1 {
            log::debug!("the C allocator did not take a limit of {cores} arenas");
        }
    });
}

/// Elsewhere the allocator is left as it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn bound_arenas() {}
