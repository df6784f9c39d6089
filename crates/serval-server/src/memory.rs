//! What a request makes the server build, bounded twice: per request (`serve
//! --max-request-memory`) and across every request in progress (`serve --max-memory-in-flight`).
//!
//! A request charges its [`Reservation`] with an estimate of each thing before it is allocated:
//! the body as it is read and inflated, the values a decoder will build (counted in the text
//! first), what goes to a Python worker. Past the request's budget the charge fails with
//! [`Error::OverBudget`] (413 / RESOURCE_EXHAUSTED); a request whose charges reach
//! [`POOLED_FROM`] also takes them from the server-wide [`MemoryPool`], and when the pool is spent it
//! fails with [`Error::Overloaded`] (429 with Retry-After / RESOURCE_EXHAUSTED) at once instead
//! of waiting, so two large requests can never wait on each other. The reservation is given back
//! when the request's reply has been sent (or the request failed). Small requests never touch
//! the pool: charging them is arithmetic on the request's own counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;

/// A request whose charges reach this many bytes takes them from the server-wide pool.
pub const POOLED_FROM: usize = 1 << 20;

/// The memory every request in progress may hold together (`serve --max-memory-in-flight`).
#[derive(Debug)]
pub struct MemoryPool {
    capacity: usize,
    used: AtomicUsize,
}

impl MemoryPool {
    pub fn new(capacity: usize) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held by requests in progress now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes `bytes` if they fit, else nothing.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.capacity)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The memory one request has been charged for; given back to the pool when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    /// The request's budget (`serve --max-request-memory`).
    limit: usize,
    /// Bytes charged so far.
    charged: usize,
    /// Of those, bytes taken from the pool (all of them once they reach [`POOLED_FROM`]).
    pooled: usize,
}

impl Reservation {
    pub fn new(pool: Arc<MemoryPool>, limit: usize) -> Reservation {
        Reservation {
            pool,
            limit,
            charged: 0,
            pooled: 0,
        }
    }

    /// Bytes charged so far.
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// Bytes the request may still be charged.
    pub fn left(&self) -> usize {
        self.limit.saturating_sub(self.charged)
    }

    /// Charges `bytes` more, before they are allocated: past the request's budget this is
    /// [`Error::OverBudget`], and past what the server-wide pool has left [`Error::Overloaded`].
    /// A failed charge changes nothing.
    pub fn charge(&mut self, bytes: usize) -> Result<(), Error> {
        let total = self.charged.saturating_add(bytes);
        if total > self.limit {
            return Err(Error::OverBudget {
                needs: total,
                budget: self.limit,
            });
        }
        if total >= POOLED_FROM {
            let more = total - self.pooled;
            if !self.pool.take(more) {
                return Err(Error::Overloaded(format!(
                    "large requests in progress hold {} MiB of the {} MiB this server lets requests \
                     use at once (serve --max-memory-in-flight), and this one needs about {} MiB; \
                     retry later",
                    self.pool.used() >> 20,
                    self.pool.capacity >> 20,
                    total.div_ceil(1 << 20),
                )));
            }
            self.pooled = total;
        }
        self.charged = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.pooled > 0 {
            self.pool.give(self.pooled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_requests_never_touch_the_pool() {
        let pool = MemoryPool::new(10);
        let mut memory = Reservation::new(pool.clone(), POOLED_FROM);
        memory.charge(POOLED_FROM - 1).unwrap();
        assert_eq!(pool.used(), 0);
        assert_eq!(memory.charged(), POOLED_FROM - 1);
    }

    #[test]
    fn past_its_budget_a_request_is_refused_naming_it_and_nothing_is_charged() {
        let pool = MemoryPool::new(1 << 30);
        let mut memory = Reservation::new(pool.clone(), 3 << 20);
        memory.charge(2 << 20).unwrap();
        let error = memory.charge(2 << 20).unwrap_err();
        assert!(
            matches!(error, Error::OverBudget { needs, budget } if needs == 4 << 20 && budget == 3 << 20)
        );
        assert!(
            error.to_string().contains("--max-request-memory"),
            "{error}"
        );
        assert_eq!(memory.charged(), 2 << 20);
        assert_eq!(pool.used(), 2 << 20);
        drop(memory);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn two_large_requests_cannot_together_exceed_the_pool() {
        let pool = MemoryPool::new(5 << 20);
        let mut first = Reservation::new(pool.clone(), 4 << 20);
        let mut second = Reservation::new(pool.clone(), 4 << 20);
        first.charge(3 << 20).unwrap();
        let error = second.charge(3 << 20).unwrap_err();
        assert!(matches!(&error, Error::Overloaded(m) if m.contains("--max-memory-in-flight")));
        assert_eq!(pool.used(), 3 << 20);
        second.charge(2 << 20).unwrap();
        assert_eq!(pool.used(), 5 << 20);
        drop(first);
        assert_eq!(pool.used(), 2 << 20);
        second.charge(1 << 20).unwrap();
        assert_eq!(pool.used(), 3 << 20);
        drop(second);
        assert_eq!(pool.used(), 0);
    }
}
