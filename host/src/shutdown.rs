//! Owned background tasks: every task a node starts is spawned through a [`Tasks`], which
//! holds the cancellation token that tells them to stop and the tracker that knows which are
//! still running. The node's shutdown cancels the token and then waits for the tracker to
//! empty, so when `NodeHandle::shutdown` returns nothing of the node is left running.
//!
//! Tasks are written to end soon after the token is cancelled (they `select!` on
//! [`Tasks::stopping`]).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A group of owned tasks and the token that stops them. Clones share both.
#[derive(Clone, Default)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// An empty group.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Cancelled when the group is told to stop.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Whether the group was told to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Runs `task` as a member of the group. It is expected to watch [`Tasks::stopping`].
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Tells every task to stop (does not wait).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until every task of the group has ended. New tasks may
    /// still be spawned while it waits; it returns once none is left.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks still running.
    pub fn live(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_then_wait_ends_every_task_after_it_winds_down() {
        let tasks = Tasks::new();
        for _ in 0..3 {
            let stop = tasks.stopping().clone();
            tasks.spawn(async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
        }
        assert_eq!(tasks.live(), 3);
        assert!(!tasks.is_stopping());
        let waited = tokio::time::Instant::now();
        tasks.stop();
        tasks.wait().await;
        assert_eq!(tasks.live(), 0);
        assert!(
            waited.elapsed() >= Duration::from_secs(1),
            "waited for each to wind down"
        );
    }
}
