//! Test-only misbehaviour of the sink on Put streams that carry data (never
//! on a client's empty probe stream), so a client's handling of each server
//! fault can be checked end to end.
//!
//! The switches (`--fault`, `--fault-after`) and the faults themselves exist
//! only when the crate is built with the `faults` feature, which the test
//! suite enables; in the product [`Fault`] has no value, so no stream can
//! ever be given one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tonic::Status;

#[cfg(feature = "faults")]
pub use switches::{Fault, FaultArgs};

/// Which Put streams get a [`Fault`]: every stream carrying data after the
/// first `after`, counted in the order their first block arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    pub fault: Fault,
    pub after: u64,
}

/// A fault plan in force, with the count of data streams seen so far.
pub(crate) struct Faults {
    plan: FaultPlan,
    streams: AtomicU64,
    /// Ends stalls when the sink stops, so shutdown never waits on them.
    shutdown: CancellationToken,
    /// Until when every stream is left unread (`pause`), once set.
    paused_until: Mutex<Option<Instant>>,
    /// Held while a delayed block waits, so delays add up across streams.
    serial: tokio::sync::Mutex<()>,
}

impl Faults {
    pub(crate) fn new(plan: FaultPlan, shutdown: CancellationToken) -> Faults {
        tracing::warn!("injecting faults for tests: {plan:?}");
        Faults {
            plan,
            streams: AtomicU64::new(0),
            shutdown,
            paused_until: Mutex::new(None),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// Before any stream reads its next message: waits out a pause in
    /// force (or the sink's stop).
    pub(crate) async fn before_message(&self) {
        let until = *self.paused_until.lock().expect("pause lock");
        if let Some(until) = until.filter(|u| *u > Instant::now()) {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Before a block of a faulted stream is written: a fixed delay, one
    /// block at a time across every stream.
    pub(crate) async fn before_block(&self, fault: Option<Fault>) {
        if let Some(delay) = fault.and_then(|f| f.block_delay()) {
            let _one_at_a_time = self.serial.lock().await;
            tokio::time::sleep(delay).await;
        }
    }

    /// Starts the one pause of a `pause` plan, when its stream comes.
    fn start_pause(&self, length: Duration) {
        let mut until = self.paused_until.lock().expect("pause lock");
        if until.is_none() {
            tracing::warn!("pausing every Put stream for {length:?} (--fault pause)");
            *until = Some(Instant::now() + length);
        }
    }

    /// The fault for the stream whose first block just arrived, if any.
    pub(crate) fn next_stream(&self) -> Option<Fault> {
        let seen = self.streams.fetch_add(1, Ordering::Relaxed);
        (seen >= self.plan.after).then_some(self.plan.fault)
    }

    /// Carries out a fault that strikes as soon as a stream's first block
    /// arrives: the status to fail the stream with. The others act when the
    /// stream ends.
    pub(crate) async fn strike_early(&self, fault: Fault) -> Option<Status> {
        if let Some(length) = fault.pause() {
            self.start_pause(length);
        }
        fault.strike_early(&self.shutdown).await
    }
}

#[cfg(not(feature = "faults"))]
mod off {
    use super::*;

    /// No fault: built without the `faults` feature.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {}

    impl Fault {
        pub(crate) async fn strike_early(self, _: &CancellationToken) -> Option<Status> {
            match self {}
        }

        pub(crate) fn short_writes(self) -> bool {
            match self {}
        }

        pub(crate) fn pause(self) -> Option<Duration> {
            match self {}
        }

        pub(crate) fn block_delay(self) -> Option<Duration> {
            match self {}
        }
    }

    /// No switches: built without the `faults` feature.
    #[derive(Debug, Clone, Default, clap::Args)]
    pub struct FaultArgs {}

    impl FaultArgs {
        pub fn plan(&self) -> Option<FaultPlan> {
            None
        }
    }
}

#[cfg(not(feature = "faults"))]
pub use off::{Fault, FaultArgs};

#[cfg(feature = "faults")]
mod switches {
    use std::str::FromStr;

    use tonic::Code;

    use super::*;

    /// A misbehaviour the sink can inject into Put streams.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// Read the whole stream, leave the file partial and answer a
        /// `written_size` one byte short of what arrived.
        ShortWrite,
        /// Reject the stream with this status after its first block.
        Status(Code),
        /// Take the first block, then neither read nor answer until the
        /// client gives up (or the sink stops).
        Stall,
        /// When the stream's first block arrives, stop reading every
        /// stream for this long (once).
        Pause(Duration),
        /// Wait this long before writing each block, one block at a time
        /// across all streams: a server with a fixed cost per block.
        BlockDelay(Duration),
    }

    impl Fault {
        pub(crate) async fn strike_early(self, shutdown: &CancellationToken) -> Option<Status> {
            match self {
                Fault::Status(code) => Some(Status::new(
                    code,
                    format!(
                        "fault injected by the sink (--fault status:{})",
                        code_name(code)
                    ),
                )),
                Fault::Stall => {
                    tracing::warn!(
                        "stalling a Put stream: it will not be read again (--fault stall)"
                    );
                    // The client's cancel drops this future; so does shutdown.
                    shutdown.cancelled().await;
                    Some(Status::unavailable(
                        "sink stopped while stalling this stream (--fault stall)",
                    ))
                }
                Fault::ShortWrite | Fault::Pause(_) | Fault::BlockDelay(_) => None,
            }
        }

        pub(crate) fn short_writes(self) -> bool {
            self == Fault::ShortWrite
        }

        pub(crate) fn pause(self) -> Option<Duration> {
            match self {
                Fault::Pause(d) => Some(d),
                _ => None,
            }
        }

        pub(crate) fn block_delay(self) -> Option<Duration> {
            match self {
                Fault::BlockDelay(d) => Some(d),
                _ => None,
            }
        }
    }

    /// The status codes `--fault status:NAME` accepts, by their gRPC names
    /// in kebab case.
    const FAULT_CODES: &[(&str, Code)] = &[
        ("cancelled", Code::Cancelled),
        ("unknown", Code::Unknown),
        ("invalid-argument", Code::InvalidArgument),
        ("deadline-exceeded", Code::DeadlineExceeded),
        ("not-found", Code::NotFound),
        ("already-exists", Code::AlreadyExists),
        ("permission-denied", Code::PermissionDenied),
        ("resource-exhausted", Code::ResourceExhausted),
        ("failed-precondition", Code::FailedPrecondition),
        ("aborted", Code::Aborted),
        ("out-of-range", Code::OutOfRange),
        ("unimplemented", Code::Unimplemented),
        ("internal", Code::Internal),
        ("unavailable", Code::Unavailable),
        ("data-loss", Code::DataLoss),
        ("unauthenticated", Code::Unauthenticated),
    ];

    fn code_name(code: Code) -> &'static str {
        FAULT_CODES
            .iter()
            .find(|(_, c)| *c == code)
            .map_or("unknown", |(n, _)| n)
    }

    impl FromStr for Fault {
        type Err = String;

        /// `short-write`, `stall`, `pause:DURATION`, `block-delay:DURATION`
        /// or `status:CODE` (e.g. `status:unavailable`).
        fn from_str(text: &str) -> Result<Fault, String> {
            match text {
                "short-write" => return Ok(Fault::ShortWrite),
                "stall" => return Ok(Fault::Stall),
                _ => {}
            }
            let duration = |d: &str| {
                humantime::parse_duration(d).map_err(|e| format!("{d:?} is not a duration: {e}"))
            };
            if let Some(d) = text.strip_prefix("pause:") {
                return Ok(Fault::Pause(duration(d)?));
            }
            if let Some(d) = text.strip_prefix("block-delay:") {
                return Ok(Fault::BlockDelay(duration(d)?));
            }
            let names = || {
                FAULT_CODES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let Some(code) = text.strip_prefix("status:") else {
                return Err(format!(
                    "unknown fault {text:?}: use short-write, stall, pause:DURATION, block-delay:DURATION or status:CODE (CODE one of {})",
                    names()
                ));
            };
            FAULT_CODES
                .iter()
                .find(|(name, _)| *name == code)
                .map(|(_, c)| Fault::Status(*c))
                .ok_or_else(|| format!("unknown status {code:?}: use one of {}", names()))
        }
    }

    /// The sink's hidden test switches.
    #[derive(Debug, Clone, Default, clap::Args)]
    pub struct FaultArgs {
        /// Test only (hidden): misbehave on Put streams that carry data.
        /// `short-write` answers written_size one byte short and leaves the
        /// file partial; `status:CODE` rejects with that gRPC status (e.g.
        /// `status:unavailable`); `stall` takes the first block, then neither
        /// reads nor answers; `pause:3s` stops reading every stream for 3 s
        /// once; `block-delay:25ms` writes one block at a time, 25 ms each.
        /// The client's empty probe stream is never affected.
        #[arg(long, hide = true, value_name = "FAULT")]
        pub fault: Option<Fault>,
        /// Test only (hidden): the first N Put streams with data behave normally
        #[arg(
            long,
            hide = true,
            value_name = "N",
            default_value_t = 0,
            requires = "fault"
        )]
        pub fault_after: u64,
    }

    impl FaultArgs {
        /// The plan these switches ask for, if any.
        pub fn plan(&self) -> Option<FaultPlan> {
            self.fault.map(|fault| FaultPlan {
                fault,
                after: self.fault_after,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fault_names_parse_and_unknown_ones_list_the_choices() {
            assert_eq!("short-write".parse(), Ok(Fault::ShortWrite));
            assert_eq!("stall".parse(), Ok(Fault::Stall));
            assert_eq!("pause:3s".parse(), Ok(Fault::Pause(Duration::from_secs(3))));
            assert_eq!(
                "block-delay:25ms".parse(),
                Ok(Fault::BlockDelay(Duration::from_millis(25)))
            );
            assert!("pause:soon"
                .parse::<Fault>()
                .unwrap_err()
                .contains("not a duration"));
            assert_eq!(
                "status:resource-exhausted".parse(),
                Ok(Fault::Status(Code::ResourceExhausted))
            );
            for (name, code) in FAULT_CODES {
                assert_eq!(code_name(*code), *name);
            }
            let err = "status:teapot".parse::<Fault>().unwrap_err();
            assert!(err.contains("unauthenticated"), "{err}");
            assert!("short".parse::<Fault>().unwrap_err().contains("stall"));
        }
    }
}
