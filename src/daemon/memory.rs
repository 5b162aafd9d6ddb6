//! Giving memory the daemon no longer uses back to the system. A daemon runs for months, and
//! glibc's allocator keeps the pages freed inside its arenas (one per thread that allocated)
//! until it is asked to return them: its resident size then creeps up to the most that windows
//! ever held at once, arena by arena. Once a minute the daemon asks (`malloc_trim`), and it
//! keeps to one arena per core rather than glibc's eight (`M_ARENA_MAX`, set before its first
//! thread): the blocking threads that score windows come and go, and each new one may open a
//! new arena, which keeps its high-water mark. The 20-minute soak on SQLite grew 17.9% with the
//! trim alone, in steps as arenas opened (bench/README, Soak).

use std::time::Duration;

/// How often freed memory is returned.
const EVERY: Duration = Duration::from_secs(60);

/// Return freed memory every [`EVERY`], until the task is aborted.
pub fn trim_periodically() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // A few milliseconds of walking the arenas: off the async threads.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    })
}

/// Keep glibc to one malloc arena per core (at least 2), as `MALLOC_ARENA_MAX` would. Call it
/// before the runtime starts its threads: it bounds the arenas opened after it.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt sets one of the allocator's parameters; it takes no pointer.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Return the free pages of every arena to the system (glibc; other allocators return them
/// by themselves, or not at all).
#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}
