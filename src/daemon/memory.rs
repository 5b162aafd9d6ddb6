//! Giving memory the daemon no longer uses back to the system. A daemon runs for months, and
//! glibc's allocator keeps the pages freed inside its arenas (one per thread that allocated)
//! until it is asked to return them: its resident size then creeps up to the most that windows
//! ever held at once, arena by arena. Once a minute the daemon asks (`malloc_trim`).

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
