//! A subscriber connection's notification queue, which a publisher never waits on.
//!
//! Notifications go into the connection's bounded outbound queue. When that is full, they go
//! into an overflow of the same bound, in order, and one drainer task per connection moves them
//! on as the client reads. A subscriber that takes nothing for the slow-subscriber time, falls a
//! whole overflow behind, or has more bytes of notifications unwritten than its byte bound, is
//! cut off as a slow consumer. (Counts alone let twenty stuck subscribers of 32 KiB messages
//! hold 760 MB.) A publish therefore costs the
//! same whether its subscribers read or not (before, a publisher waited up to two seconds for
//! each stuck subscriber in turn), and a stuck subscriber holds at most two queues' worth of
//! notifications.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::Message;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

/// What became of a posted notification.
#[derive(Debug, PartialEq, Eq)]
pub enum Posted {
    /// In the queue or the overflow; nothing to do.
    Queued,
    /// The connection is gone or already cut off.
    Closed,
    /// The first notification of an overflow: the caller starts [`Mailbox::drain`].
    Overflowing,
    /// The overflow is full: the caller cuts the subscriber off.
    TooFarBehind,
}

/// One connection's notification queue (see the module doc).
pub struct Mailbox {
    tx: mpsc::Sender<Message>,
    kick: CancellationToken,
    /// Set while the overflow holds notifications or its drainer is sending one: new ones must
    /// queue behind them.
    overflowing: AtomicBool,
    overflow: Mutex<VecDeque<Message>>,
    /// Most notifications the overflow holds.
    cap: usize,
    /// Bytes posted (or counted) and not yet written by the session.
    unwritten: AtomicUsize,
    /// Most bytes unwritten before the subscriber is too far behind.
    max_bytes: usize,
}

fn message_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

impl Mailbox {
    /// A mailbox in front of `tx`; `kick` is cancelled when the connection is cut off. At most
    /// `cap` notifications wait in the overflow, and `max_bytes` in all.
    pub fn new(
        tx: mpsc::Sender<Message>,
        kick: CancellationToken,
        cap: usize,
        max_bytes: usize,
    ) -> Mailbox {
        Mailbox {
            tx,
            kick,
            overflowing: AtomicBool::new(false),
            overflow: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            unwritten: AtomicUsize::new(0),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Something else put `n` bytes into the same outbound queue (a streamed result).
    pub fn counted(&self, n: usize) {
        self.unwritten.fetch_add(n, Ordering::Relaxed);
    }

    /// The session wrote a frame of `n` bytes from the outbound queue.
    pub fn written(&self, n: usize) {
        let _ = self
            .unwritten
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// The outbound queue itself (for deliveries that may wait, such as queue push).
    pub fn sender(&self) -> &mpsc::Sender<Message> {
        &self.tx
    }

    /// Cancelled when the connection is cut off as a slow consumer.
    pub fn kicked(&self) -> &CancellationToken {
        &self.kick
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Message>> {
        // Nothing panics while the lock is held.
        self.overflow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg` without waiting.
    pub fn post(&self, msg: Message) -> Posted {
        let len = message_len(&msg);
        let before = self.unwritten.load(Ordering::Relaxed);
        // One message alone always fits, however large.
        if before > 0 && before.saturating_add(len) > self.max_bytes {
            return Posted::TooFarBehind;
        }
        let posted = self.enqueue(msg);
        if matches!(posted, Posted::Queued | Posted::Overflowing) {
            self.unwritten.fetch_add(len, Ordering::Relaxed);
        }
        posted
    }

    fn enqueue(&self, msg: Message) -> Posted {
        let msg = if self.overflowing.load(Ordering::Acquire) {
            msg
        } else {
            match self.tx.try_send(msg) {
                Ok(()) => return Posted::Queued,
                Err(TrySendError::Closed(_)) => return Posted::Closed,
                Err(TrySendError::Full(m)) => m,
            }
        };
        if self.kick.is_cancelled() || self.tx.is_closed() {
            return Posted::Closed;
        }
        let mut overflow = self.lock();
        if !self.overflowing.load(Ordering::Acquire) {
            // Nothing is waiting ahead of this one: the queue may have room again by now.
            let msg = match self.tx.try_send(msg) {
                Ok(()) => return Posted::Queued,
                Err(TrySendError::Closed(_)) => return Posted::Closed,
                Err(TrySendError::Full(m)) => m,
            };
            overflow.push_back(msg);
            self.overflowing.store(true, Ordering::Release);
            return Posted::Overflowing;
        }
        if overflow.len() >= self.cap {
            return Posted::TooFarBehind;
        }
        overflow.push_back(msg);
        Posted::Queued
    }

    /// Moves the overflow into the queue as the client reads. `false` when one notification
    /// found no room for `patience`: the subscriber is slow and must be cut off.
    pub async fn drain(&self, patience: Duration) -> bool {
        loop {
            let next = {
                let mut overflow = self.lock();
                let next = overflow.pop_front();
                if next.is_none() {
                    self.overflowing.store(false, Ordering::Release);
                }
                next
            };
            let Some(msg) = next else {
                return true;
            };
            match tokio::time::timeout(patience, self.tx.send(msg)).await {
                Ok(Ok(())) if !self.kick.is_cancelled() => {}
                // Gone or cut off: nobody will read the rest.
                Ok(_) => {
                    self.lock().clear();
                    return true;
                }
                Err(_) => {
                    self.lock().clear();
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::Utf8Bytes;

    fn msg(i: usize) -> Message {
        Message::Text(Utf8Bytes::from(i.to_string()))
    }

    fn text(m: Message) -> String {
        match m {
            Message::Text(t) => t.as_str().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn overflow_keeps_order_and_drains_as_the_reader_reads() {
        let (tx, mut rx) = mpsc::channel(2);
        let mb = std::sync::Arc::new(Mailbox::new(tx, CancellationToken::new(), 10, 1 << 20));
        assert_eq!(mb.post(msg(0)), Posted::Queued);
        assert_eq!(mb.post(msg(1)), Posted::Queued);
        assert_eq!(mb.post(msg(2)), Posted::Overflowing);
        for i in 3..8 {
            assert_eq!(mb.post(msg(i)), Posted::Queued);
        }
        let drainer = tokio::spawn({
            let mb = mb.clone();
            async move { mb.drain(Duration::from_secs(5)).await }
        });
        let got: Vec<String> = {
            let mut v = Vec::new();
            for _ in 0..8 {
                v.push(text(rx.recv().await.expect("msg")));
            }
            v
        };
        assert_eq!(got, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(drainer.await.expect("join"));
        // Drained: posts go straight to the queue again.
        assert_eq!(mb.post(msg(8)), Posted::Queued);
        assert_eq!(text(rx.recv().await.expect("msg")), "8");
    }

    #[tokio::test]
    async fn a_full_overflow_says_the_subscriber_is_too_far_behind() {
        let (tx, _rx) = mpsc::channel(1);
        let mb = Mailbox::new(tx, CancellationToken::new(), 2, 1 << 20);
        assert_eq!(mb.post(msg(0)), Posted::Queued);
        assert_eq!(mb.post(msg(1)), Posted::Overflowing);
        assert_eq!(mb.post(msg(2)), Posted::Queued);
        assert_eq!(mb.post(msg(3)), Posted::TooFarBehind);
    }

    #[tokio::test]
    async fn bytes_unwritten_past_the_bound_say_the_subscriber_is_too_far_behind() {
        let (tx, mut rx) = mpsc::channel(100);
        let mb = Mailbox::new(tx, CancellationToken::new(), 100, 10);
        let big = || Message::Text(Utf8Bytes::from("0123456789abcdef"));
        // The first fits alone, however large; the next must wait for it to be written.
        assert_eq!(mb.post(big()), Posted::Queued);
        assert_eq!(mb.post(msg(1)), Posted::TooFarBehind);
        let written = rx.recv().await.expect("msg");
        mb.written(16);
        drop(written);
        assert_eq!(mb.post(msg(2)), Posted::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_is_slow() {
        let (tx, _rx) = mpsc::channel(1);
        let mb = Mailbox::new(tx, CancellationToken::new(), 4, 1 << 20);
        assert_eq!(mb.post(msg(0)), Posted::Queued);
        assert_eq!(mb.post(msg(1)), Posted::Overflowing);
        assert!(!mb.drain(Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn a_closed_or_kicked_connection_takes_nothing() {
        let (tx, rx) = mpsc::channel(1);
        let kick = CancellationToken::new();
        let mb = Mailbox::new(tx, kick.clone(), 4, 1 << 20);
        assert_eq!(mb.post(msg(0)), Posted::Queued);
        assert_eq!(mb.post(msg(1)), Posted::Overflowing);
        kick.cancel();
        assert_eq!(mb.post(msg(2)), Posted::Closed);
        drop(rx);
        assert!(mb.drain(Duration::from_secs(2)).await);
        assert_eq!(mb.post(msg(3)), Posted::Closed);
    }
}
