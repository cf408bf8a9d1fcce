//! One owner thread per loaded Marian/T5 model. Translate stage threads send a document's
//! sentences through a bounded channel and wait; the owner takes whatever has arrived from other
//! documents meanwhile and translates it all in one [`Seq2Seq::run`], whose length-sorted batches
//! then fill across documents instead of one short document at a time. The stage threads no
//! longer run the model at once on the same cores either.
//!
//! A combined run that fails is run again request by request, so one document's bad input costs
//! only its own sentences.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

use super::{Decoding, MtError, Output, Seq2Seq};

/// Sentences one combined run takes at most; more wait for the next run.
const MAX_COMBINED: usize = 1024;

struct Request {
    texts: Vec<String>,
    decoding: Decoding,
    batch: usize,
    reply: mpsc::Sender<Result<Vec<Output>, MtError>>,
}

pub struct SharedSeq2Seq {
    model: Arc<Seq2Seq>,
    requests: SyncSender<Request>,
}

impl SharedSeq2Seq {
    /// Start the owner thread; at most `queue` requests wait (senders block beyond that).
    pub fn start(model: Seq2Seq, queue: usize) -> Self {
        let model = Arc::new(model);
        let (requests, waiting) = mpsc::sync_channel(queue.max(1));
        let owned = model.clone();
        std::thread::Builder::new()
            .name("mt-model".into())
            .spawn(move || serve(&owned, waiting))
            .expect("spawn the translation model thread");
        Self { model, requests }
    }

    /// The model, for what does not run it (provenance, tokenizer, limits).
    pub fn model(&self) -> &Seq2Seq {
        &self.model
    }

    /// As [`Seq2Seq::run`], on the owner thread, batched with other callers' sentences.
    pub fn run(&self, texts: &[&str], decoding: &Decoding, batch: usize) -> Result<Vec<Output>, MtError> {
        let (reply, answer) = mpsc::channel();
        let request = Request { texts: texts.iter().map(|t| t.to_string()).collect(), decoding: decoding.clone(), batch, reply };
        self.requests.send(request).map_err(|_| MtError::Stopped("the model thread has stopped".into()))?;
        answer.recv().map_err(|_| MtError::Stopped("the model thread dropped the request".into()))?
    }
}

fn serve(model: &Seq2Seq, waiting: Receiver<Request>) {
    let mut next: Option<Request> = None;
    loop {
        let first = match next.take() {
            Some(request) => request,
            None => match waiting.recv() {
                Ok(request) => request,
                Err(_) => return, // every sender is gone: the model was dropped
            },
        };
        let (group, held) = gather(first, &waiting);
        next = held;
        run_group(model, group);
    }
}

/// `first` and the requests already waiting that can run with it (same decoding and batch size,
/// up to [`MAX_COMBINED`] sentences), and the first one that could not, kept for the next run.
fn gather(first: Request, waiting: &Receiver<Request>) -> (Vec<Request>, Option<Request>) {
    let mut total = first.texts.len();
    let mut group = vec![first];
    while total < MAX_COMBINED {
        match waiting.try_recv() {
            Ok(request) if request.decoding == group[0].decoding && request.batch == group[0].batch && total + request.texts.len() <= MAX_COMBINED => {
                total += request.texts.len();
                group.push(request);
            }
            Ok(request) => return (group, Some(request)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        }
    }
    (group, None)
}

fn run_group(model: &Seq2Seq, group: Vec<Request>) {
    let texts: Vec<&str> = group.iter().flat_map(|r| r.texts.iter().map(String::as_str)).collect();
    let combined = if group.len() > 1 { guarded(|| model.run(&texts, &group[0].decoding, group[0].batch)).ok() } else { None };
    match combined {
        Some(outputs) => {
            let mut outputs = outputs.into_iter();
            for request in group {
                let own: Vec<Output> = outputs.by_ref().take(request.texts.len()).collect();
                let _ = request.reply.send(Ok(own));
            }
        }
        // Alone, or the combined run failed: each request on its own, so an error is its own.
        None => {
            for request in group {
                let texts: Vec<&str> = request.texts.iter().map(String::as_str).collect();
                let _ = request.reply.send(guarded(|| model.run(&texts, &request.decoding, request.batch)));
            }
        }
    }
}

/// A panic in the model is an error for the request, not the end of the owner thread.
fn guarded(run: impl FnOnce() -> Result<Vec<Output>, MtError>) -> Result<Vec<Output>, MtError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let message = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
        Err(MtError::Stopped(format!("the model panicked: {}", message.chars().take(200).collect::<String>())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(texts: usize, beams: usize) -> (Request, Receiver<Result<Vec<Output>, MtError>>) {
        let (reply, answer) = mpsc::channel();
        let decoding = Decoding { beams, ..Decoding::default() };
        (Request { texts: vec!["x".to_string(); texts], decoding, batch: 8, reply }, answer)
    }

    #[test]
    fn waiting_requests_join_the_run_until_one_differs() {
        let (tx, rx) = mpsc::sync_channel(8);
        let mut answers = Vec::new();
        for beams in [1, 1, 1, 4, 1] {
            let (r, a) = request(3, beams);
            tx.send(r).unwrap();
            answers.push(a);
        }
        let first = rx.recv().unwrap();
        let (group, held) = gather(first, &rx);
        assert_eq!(group.len(), 3, "the three greedy requests waiting run together");
        assert_eq!(held.map(|r| r.decoding.beams), Some(4), "the beam-search one waits for the next run");
        let (group, held) = gather(rx.recv().unwrap(), &rx);
        assert_eq!((group.len(), held.is_none()), (1, true));
    }

    #[test]
    fn a_run_stops_growing_at_its_cap() {
        let (tx, rx) = mpsc::sync_channel(8);
        for texts in [MAX_COMBINED - 10, 5, 10] {
            tx.send(request(texts, 1).0).unwrap();
        }
        let (group, held) = gather(rx.recv().unwrap(), &rx);
        assert_eq!(group.iter().map(|r| r.texts.len()).sum::<usize>(), MAX_COMBINED - 5);
        assert_eq!(held.map(|r| r.texts.len()), Some(10));
    }
}
