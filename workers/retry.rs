//! What to do after a stage attempt: go on, try again later, or give up. One pure decision, two
//! executors: the worker carries it out with delay queues and the dead-letter queue, `docpipe
//! process` with a sleep and a failed stage report. Both word the reasons the same way because
//! the words are made here.

use std::time::Duration;

use crate::error::{ErrorKind, StageError};

/// How a stage attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted<'a> {
    /// The stage recorded its outcome in the result (success or a document error).
    Recorded,
    /// A fault worth another try (storage, network); nothing was recorded.
    Transient(&'a StageError),
    /// The stage crashed (panic); nothing was recorded.
    Crashed(&'a StageError),
}

/// What the executor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next stage (or publish the result).
    Continue,
    /// Run the stage again as attempt `next_attempt` after `delay`. `step` names the delay
    /// queue (0 for the first retry).
    Retry { next_attempt: u32, step: usize, delay: Duration },
    /// Stop: park the message and record the stage as failed with this kind and reason.
    GiveUp { kind: ErrorKind, reason: String },
}

/// Decide after attempt `attempt` (1-based) of a stage, with the configured back-off delays.
pub fn decide(attempted: Attempted<'_>, attempt: u32, backoff_ms: &[u64]) -> Action {
    match attempted {
        Attempted::Recorded => Action::Continue,
        Attempted::Transient(_) if (attempt as usize) <= backoff_ms.len() => {
            let step = attempt.max(1) as usize - 1;
            Action::Retry { next_attempt: attempt + 1, step, delay: Duration::from_millis(backoff_ms[step]) }
        }
        Attempted::Transient(error) => Action::GiveUp {
            kind: ErrorKind::RetriesExhausted,
            reason: format!("gave up after {attempt} attempts: {}", error.reason),
        },
        Attempted::Crashed(error) => Action::GiveUp { kind: error.kind, reason: error.reason.clone() },
    }
}

/// Before running anything for a delivery the broker has handed out `deliveries` times before
/// (`x-delivery-count`): past `limit - 1`, the broker would park the next return silently, so
/// give up now with a reason the case system can read.
pub fn over_delivery_limit(deliveries: u32, limit: u32) -> Option<Action> {
    (deliveries >= limit).then(|| Action::GiveUp {
        kind: ErrorKind::WorkerCrash,
        reason: format!(
            "delivered {} times without finishing: workers crashed or lost their connection on it",
            deliveries + 1
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StageError {
        StageError::new(ErrorKind::Unavailable, "blob store down")
    }

    #[test]
    fn recorded_outcomes_continue() {
        assert_eq!(decide(Attempted::Recorded, 1, &[100]), Action::Continue);
        assert_eq!(decide(Attempted::Recorded, 9, &[]), Action::Continue);
    }

    #[test]
    fn transient_failures_retry_once_per_delay_then_give_up() {
        let backoff = [100, 1000];
        let e = unavailable();
        assert_eq!(
            decide(Attempted::Transient(&e), 1, &backoff),
            Action::Retry { next_attempt: 2, step: 0, delay: Duration::from_millis(100) }
        );
        assert_eq!(
            decide(Attempted::Transient(&e), 2, &backoff),
            Action::Retry { next_attempt: 3, step: 1, delay: Duration::from_millis(1000) }
        );
        assert_eq!(
            decide(Attempted::Transient(&e), 3, &backoff),
            Action::GiveUp { kind: ErrorKind::RetriesExhausted, reason: "gave up after 3 attempts: blob store down".into() }
        );
    }

    #[test]
    fn without_delays_a_transient_failure_gives_up_at_once() {
        let e = unavailable();
        assert!(matches!(decide(Attempted::Transient(&e), 1, &[]), Action::GiveUp { kind: ErrorKind::RetriesExhausted, .. }));
    }

    #[test]
    fn crashes_are_never_retried_and_keep_their_kind() {
        let e = StageError::new(ErrorKind::Panic, "stage panicked: boom");
        assert_eq!(
            decide(Attempted::Crashed(&e), 1, &[100, 1000]),
            Action::GiveUp { kind: ErrorKind::Panic, reason: "stage panicked: boom".into() }
        );
    }

    #[test]
    fn the_delivery_limit_is_enforced_before_the_broker_does_it() {
        assert_eq!(over_delivery_limit(0, 5), None);
        assert_eq!(over_delivery_limit(4, 5), None);
        let Some(Action::GiveUp { kind, reason }) = over_delivery_limit(5, 5) else { panic!("expected give-up") };
        assert_eq!(kind, ErrorKind::WorkerCrash);
        assert!(reason.starts_with("delivered 6 times"), "{reason}");
    }
}
