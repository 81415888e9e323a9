//! [`Pending`]: the answer of a log operation, awaitable from async code and waitable from
//! blocking threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::oneshot;

use super::LogError;

/// The answer to a log operation. Writes are answered only once their batch is durable.
///
/// `.await` it in async code, or call [`Pending::wait`] on a blocking thread. Dropping it does
/// not cancel the operation: a write already sent is still committed.
#[must_use = "a log write is acknowledged only through its Pending answer"]
#[derive(Debug)]
pub struct Pending<T> {
    inner: Inner<T>,
}

#[derive(Debug)]
enum Inner<T> {
    Ready(Option<Result<T, LogError>>),
    Waiting(oneshot::Receiver<Result<T, LogError>>),
}

/// The sending half a backend answers a [`Pending`] through.
pub(crate) type Answer<T> = oneshot::Sender<Result<T, LogError>>;

impl<T> Pending<T> {
    /// An answer that is already known (reads done inline, requests rejected up front).
    pub fn ready(result: Result<T, LogError>) -> Self {
        Self {
            inner: Inner::Ready(Some(result)),
        }
    }

    /// An answer that arrives later through the returned sender; a dropped sender answers
    /// [`LogError::Closed`].
    pub(crate) fn channel() -> (Answer<T>, Self) {
        let (tx, rx) = oneshot::channel();
        (
            tx,
            Self {
                inner: Inner::Waiting(rx),
            },
        )
    }

    /// Blocks the current thread until the answer arrives.
    ///
    /// Meant for threads outside the async runtime; inside it, `.await` instead (this would
    /// block a runtime worker, though it does not panic).
    pub fn wait(mut self) -> Result<T, LogError> {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match Pin::new(&mut self).poll(&mut cx) {
                Poll::Ready(result) => return result,
                Poll::Pending => std::thread::park(),
            }
        }
    }
}

// No field is ever pinned structurally: the value is moved out, never polled in place.
impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
    type Output = Result<T, LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(LogError::Closed))),
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(LogError::Closed))),
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_an_answer_sent_from_another_thread() {
        let (tx, pending) = Pending::<u32>::channel();
        let sender = std::thread::spawn(move || tx.send(Ok(7)));
        assert_eq!(pending.wait().unwrap(), 7);
        sender.join().unwrap().unwrap();
    }

    #[test]
    fn a_dropped_sender_answers_closed() {
        let (tx, pending) = Pending::<u32>::channel();
        drop(tx);
        assert!(matches!(pending.wait(), Err(LogError::Closed)));
    }

    #[tokio::test]
    async fn await_returns_the_answer() {
        let (tx, pending) = Pending::<&str>::channel();
        tokio::spawn(async move { tx.send(Ok("done")) });
        assert_eq!(pending.await.unwrap(), "done");
        assert_eq!(Pending::ready(Ok(1)).await.unwrap(), 1);
    }
}
