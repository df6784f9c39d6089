//! CPU work too big for the async threads (decompressing, parsing, decoding and running large
//! requests) runs on tokio's blocking pool, so health checks and small requests keep answering.
//!
//! A blocking thread that just handled a large request gives free memory back before it goes
//! idle. The allocator (mimalloc, `crates/serval/src/main.rs`) returns a thread's freed pages only
//! when that thread allocates or collects again, and a pool thread may then sleep for seconds:
//! without this, one refused gzip bomb (inflating past the 100 MiB body limit) left the server
//! 250 MB larger until later requests happened to land on the same threads. Giving back costs
//! tens of µs (the next large request faults its pages in again), so only work that handled at
//! least [`GIVE_BACK_FROM`] bytes does it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::error::Error;

/// Set after large work: how many more times [`give_back_after_large_work`] gives memory back.
static AFTER_LARGE_WORK: AtomicU8 = AtomicU8::new(0);

/// Requests at least this large (bytes) are decoded and parsed on a blocking thread.
pub const OFFLOAD_FROM: usize = 64 * 1024;

/// Work that handled at least this many bytes gives free memory back when it is done.
pub const GIVE_BACK_FROM: usize = 1024 * 1024;

/// Runs `work` on a blocking thread; `what` names it in the error if the thread panics. `work`
/// returns its result and how many bytes it handled (for [`GIVE_BACK_FROM`]).
pub async fn run<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> (Result<T, Error>, usize) + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || {
        let (result, handled) = work();
        if handled >= GIVE_BACK_FROM {
            give_back_free_memory();
            AFTER_LARGE_WORK.store(3, Ordering::Relaxed);
        }
        result
    })
    .await
    .map_err(|e| Error::Internal(format!("{what} task failed: {e}")))?
}

/// Runs `work`, which handles `size` bytes, here if `size` is below [`OFFLOAD_FROM`], else on a
/// blocking thread.
pub async fn if_large<T: Send + 'static>(
    size: usize,
    what: &'static str,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if size < OFFLOAD_FROM {
        work()
    } else {
        run(what, move || (work(), size)).await
    }
}

/// Gives memory back once a second for three seconds after large work: what a large request
/// leaves on the async threads (its reply, freed once sent) is not returned while those threads
/// have nothing else to do. Runs until `stop` says so.
pub async fn give_back_after_large_work(mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let left = AFTER_LARGE_WORK.load(Ordering::Relaxed);
        if left > 0 {
            AFTER_LARGE_WORK.store(left - 1, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(give_back_free_memory).await;
        }
    }
}

/// Returns this thread's free pages, abandoned ones and the process's purgeable arenas to the
/// operating system. Under another global allocator (this crate's own tests) it only tidies
/// mimalloc's unused heaps.
fn give_back_free_memory() {
    // SAFETY: `mi_collect` has no preconditions; it only walks the calling thread's own heap and
    // the process's abandoned segments.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_work_runs_here_and_large_work_on_a_blocking_thread() {
        let here = std::thread::current().id();
        let small = if_large(10, "test", move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(small, here);
        let large = if_large(
            OFFLOAD_FROM,
            "test",
            move || Ok(std::thread::current().id()),
        )
        .await
        .unwrap();
        assert_ne!(large, here);
    }

    #[tokio::test]
    async fn a_panicking_task_is_an_internal_error_naming_it() {
        let error = run::<()>("decoding", || panic!("boom")).await.unwrap_err();
        assert!(
            matches!(&error, Error::Internal(text) if text.starts_with("decoding task failed")),
            "{error:?}"
        );
    }
}
