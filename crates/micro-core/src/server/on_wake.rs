//! A future polled only when it asked to be: for what a connection's task watches
//! beside the connection itself.
//!
//! A connection's task wakes several times per call (a request read, a response
//! ready to write); `tokio::select!` polls every branch on each wake. The branches
//! that watch for a drain or an idle connection would re-check a cancellation token
//! and a timer each time, for nothing: they only change when their own waker fires.
//! [`OnWake`] gives its future a waker of its own and polls it only after that waker
//! fired (or on the first poll), as `FuturesUnordered` does for its futures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Whether the inner future was woken, and the task to wake when it is.
#[derive(Debug)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `future`, polled only when its own waker fired since its last poll.
pub(crate) struct OnWake<F> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> OnWake<F> {
    pub(crate) fn new(future: F) -> Self {
        let flag = Arc::new(Flag {
            // Polled on the first poll, so that it can register its interest.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            future: Box::pin(future),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read: a wake between the two is not lost.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, waking its waker when set.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
    }

    impl Future for Probe {
        type Output = ();

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_only_after_its_own_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let mut watched = OnWake::new(Probe {
            polls: Arc::clone(&polls),
            ready: Arc::clone(&ready),
        });
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        // First poll: polled, so it can register.
        assert!(Pin::new(&mut watched).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The task woke for something else: the inner future is left alone.
        ready.store(true, Ordering::SeqCst);
        assert!(Pin::new(&mut watched).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own waker fired: polled again, and ready.
        watched.waker.wake_by_ref();
        assert!(Pin::new(&mut watched).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_timer_inside_still_fires() {
        let watched = OnWake::new(tokio::time::sleep(std::time::Duration::from_millis(20)));
        tokio::time::timeout(std::time::Duration::from_secs(5), watched)
            .await
            .unwrap_or_else(|_| panic!("the inner timer's wake did not reach the task"));
    }
}
