//! Calls made at about the same time, gathered into one statement: each
//! caller sends its request and waits; a loop takes whatever has piled up
//! (up to a bound) and runs it as one batch. Under light load a call runs
//! alone, with no wait for company; under load each statement carries many,
//! so a worker's claims and completions cost a round trip per batch, not per
//! job. Every request in a batch still stands alone in SQL (its own
//! conditions in the one `UPDATE`), so batching changes no guarantee.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Pending<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// A batching loop's front door.
pub(crate) struct Batcher<Req, Resp> {
    tx: mpsc::UnboundedSender<Pending<Req, Resp>>,
}

impl<Req, Resp> std::fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the loop: `run` gets up to `max` requests and returns one
    /// response each, in order. The loop ends when the batcher is dropped.
    pub(crate) fn spawn<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending<Req, Resp>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                    batch.into_iter().unzip();
                let responses = run(requests).await;
                for (reply, response) in replies.into_iter().zip(responses) {
                    // a caller that gave up does not stop the others
                    let _ = reply.send(response);
                }
            }
        });
        Self { tx }
    }

    /// Sends `request` into the next batch and waits for its response;
    /// `None` only if the loop has stopped.
    pub(crate) async fn call(&self, request: Req) -> Option<Resp> {
        let (reply, response) = oneshot::channel();
        self.tx.send((request, reply)).ok()?;
        response.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_made_together_share_a_batch_and_get_their_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let batcher = Arc::new(Batcher::spawn(8, move |requests: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                requests.into_iter().map(|r| r * 10).collect()
            }
        }));
        let calls: Vec<_> = (0..20u32)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (i, batcher.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            assert_eq!(answer, Some(i * 10));
        }
        let n = batches.load(Ordering::SeqCst);
        assert!((3..20).contains(&n), "20 calls in {n} batches of at most 8");
        // alone, a call is its own batch
        assert_eq!(batcher.call(7).await, Some(70));
    }
}
