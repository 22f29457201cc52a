//! The run's clock: the deadline of the current phase, when the run
//! started and when it was interrupted.

use std::time::{Duration, Instant};

/// How long agents get to send what finished after an abort.
const ABORT_GRACE: Duration = Duration::from_secs(15);

pub(crate) struct Clock {
    /// Registration, then readiness, must be over by this instant.
    deadline: Instant,
    /// The common start instant, once the barrier opened.
    started: Option<Instant>,
    interrupted: Option<Instant>,
    /// Agents must have finished by this instant (`--run-timeout`).
    run_deadline: Option<Instant>,
}

impl Clock {
    /// A clock whose registration deadline is `register_timeout` away.
    pub(crate) fn new(register_timeout: Duration) -> Clock {
        Clock {
            deadline: Instant::now() + register_timeout,
            started: None,
            interrupted: None,
            run_deadline: None,
        }
    }

    /// Agents were assigned their shards: they have `ready_timeout` to
    /// be ready.
    pub(crate) fn ready_within(&mut self, ready_timeout: Duration) {
        self.deadline = Instant::now() + ready_timeout;
    }

    pub(crate) fn past_deadline(&self, now: Instant) -> bool {
        now > self.deadline
    }

    /// The barrier opened: the run starts `delay` from now and must be
    /// over `limit` after that.
    pub(crate) fn start_after(&mut self, delay: Duration, limit: Duration) {
        let start = Instant::now() + delay;
        self.started = Some(start);
        self.run_deadline = start.checked_add(limit);
    }

    /// The common start instant, once the barrier opened.
    pub(crate) fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Whether the run is past its `--run-timeout`.
    pub(crate) fn past_run_deadline(&self, now: Instant) -> bool {
        self.run_deadline.is_some_and(|d| now > d)
    }

    /// Time since the start instant (zero if the run never started).
    pub(crate) fn wall(&self) -> Duration {
        self.started
            .map(|s| Instant::now().saturating_duration_since(s))
            .unwrap_or_default()
    }

    pub(crate) fn interrupt(&mut self) {
        self.interrupted = Some(Instant::now());
    }

    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted.is_some()
    }

    /// Whether agents had their time to finish after the interruption.
    pub(crate) fn grace_over(&self, now: Instant) -> bool {
        self.interrupted
            .is_some_and(|since| now.duration_since(since) > ABORT_GRACE)
    }
}
