//! A spawned task that is aborted when its handle is dropped: whoever stopped waiting for it
//! (a request that ended early, a caller that gave up on a plugin call) stops it too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Aborts its task when dropped; awaiting it awaits the task.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}
