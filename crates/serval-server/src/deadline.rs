//! [`within`]: `tokio::time::timeout_at` without a timer for work that is done when first
//! polled. Tokio's `Timeout` makes its `Sleep` when it is built (the runtime's handle looked up
//! and cloned, a timer entry initialised, all dropped again); most of a small request's steps
//! (decoding a body that came with its headers, running a native model) finish at their first
//! poll, so the timer is made only when the work has to wait. The deadline is absolute: a
//! timer made later expires at the same instant.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// The deadline passed before the work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// A future bounded by a deadline (see [`within`]).
    pub struct Within<F> {
        #[pin]
        future: F,
        deadline: Instant,
        #[pin]
        timer: Option<Sleep>,
    }
}

/// `future`, or [`Elapsed`] once `deadline` has passed while it was waiting.
pub fn within<F: Future>(deadline: Instant, future: F) -> Within<F> {
    Within {
        future,
        deadline,
        timer: None,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if this.timer.is_none() {
            this.timer
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Elapsed)),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_done_in_time_is_returned_and_late_work_is_cut_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(within(deadline, async { 7 }).await, Ok(7));
        let quick = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(within(deadline, quick).await, Ok(()));
        let slow = tokio::time::sleep(Duration::from_secs(60));
        assert_eq!(within(deadline, slow).await, Err(Elapsed));
        assert_eq!(Instant::now(), deadline, "cut at the deadline, not later");
        // A deadline already past: work that is ready still counts, waiting work is cut.
        assert_eq!(within(deadline, async { 8 }).await, Ok(8));
        let waiting = std::future::pending::<()>();
        assert_eq!(within(deadline, waiting).await, Err(Elapsed));
    }
}
