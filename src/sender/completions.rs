//! The group-commit writer of send outcomes: the sends that finish while one batch
//! is being written make up the next, written in one transaction.

use tokio::sync::{mpsc, oneshot};

use crate::store::{Completion, Store};

/// Records send outcomes in batches ("group commit"): under load N completions cost
/// one transaction instead of N, and at low rates a batch is a single row written
/// at once (no waiting to fill a batch). A send's task waits for its own answer,
/// so a send counts as finished only once its outcome is committed.
pub(super) struct Completions {
    queue: mpsc::UnboundedSender<(Completion, oneshot::Sender<Result<bool, String>>)>,
}

/// The most completions written in one transaction.
const MAX_COMPLETION_BATCH: usize = 512;

impl Completions {
    /// Starts the writer task; it ends when the last [`Sender`](super::Sender)
    /// clone is dropped.
    pub(super) fn start(store: Store) -> Completions {
        let (queue, mut pending) =
            mpsc::unbounded_channel::<(Completion, oneshot::Sender<Result<bool, String>>)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while pending.recv_many(&mut batch, MAX_COMPLETION_BATCH).await > 0 {
                let (completions, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                metrics::histogram!("switchboard_send_completion_batch_size")
                    .record(completions.len() as f64);
                match store.complete_sends(&completions).await {
                    Ok(recorded) => {
                        for (answer, recorded) in answers.into_iter().zip(recorded) {
                            let _ = answer.send(Ok(recorded));
                        }
                    }
                    Err(error) => {
                        let error = error.to_string();
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Completions { queue }
    }

    /// Records one outcome with the next batch; `Ok(false)` when the claim was lost.
    pub(super) async fn record(&self, completion: Completion) -> Result<bool, String> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((completion, answer))
            .map_err(|_| "the completion writer has stopped".to_owned())?;
        answered
            .await
            .map_err(|_| "the completion writer has stopped".to_owned())?
    }
}
