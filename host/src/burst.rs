//! Writing a burst: the first queued frame, then every frame already waiting behind it, then
//! one flush. Each flush is a syscall and wakes the peer, so replies that are ready together
//! share one (the session, the peer endpoint, the link and the client all write this way).

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;

/// Feeds `first` and whatever `rx` already holds (each turned into a message by `each`), then
/// flushes once. Stops at the first error.
pub async fn write_burst<T, M, S>(
    sink: &mut S,
    first: T,
    rx: &mut mpsc::Receiver<T>,
    mut each: impl FnMut(T) -> M,
) -> Result<(), S::Error>
where
    S: Sink<M> + Unpin,
{
    sink.feed(each(first)).await?;
    while let Ok(next) = rx.try_recv() {
        sink.feed(each(next)).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_everything_queued_then_one_flush() {
        let (tx, mut rx) = mpsc::channel(8);
        for i in 1..4 {
            tx.send(i).await.expect("room");
        }
        let mut sink: Vec<i32> = Vec::new();
        write_burst(&mut sink, 0, &mut rx, |n| n * 10)
            .await
            .expect("written");
        assert_eq!(sink, [0, 10, 20, 30]);
        assert!(rx.try_recv().is_err(), "nothing left behind");
    }
}
