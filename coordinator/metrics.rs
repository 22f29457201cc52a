//! The coordinator's Prometheus metrics: its agents by state, and the
//! files the agents reported (counted as [`ClientMetrics`] counts them in
//! `play`). Served by [`walplayer_klio::metrics::serve`]
//! (`walplayer coordinator --metrics-listen`).

use std::fmt;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use walplayer_klio::metrics::{ClientMetrics, Registry};

use crate::roster::{Roster, State};

/// Every value of the `state` label, in the order a run goes through them.
pub const STATES: [&str; 6] = [
    "registered",
    "preparing",
    "ready",
    "running",
    "finished",
    "lost",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct StateLabel(&'static str);

impl EncodeLabelSet for StateLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        ("state", self.0).encode(encoder.encode_label())
    }
}

/// The coordinator's metric handles; cheap to clone.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    agents: Family<StateLabel, Gauge>,
    /// Files, bytes stored and upload times the agents reported.
    pub files: ClientMetrics,
}

impl CoordinatorMetrics {
    /// Registers `walplayer_agents{state}` and the report families in
    /// `registry`; `cluster_labels` as in [`ClientMetrics::register`].
    pub fn register(registry: &mut Registry, cluster_labels: bool) -> CoordinatorMetrics {
        let m = CoordinatorMetrics {
            agents: Family::default(),
            files: ClientMetrics::register_reports(registry, cluster_labels),
        };
        for state in STATES {
            let _ = m.agents.get_or_create(&StateLabel(state));
        }
        registry.register(
            "walplayer_agents",
            "Agents of the run, by state (registered, preparing, ready, running, finished, lost)",
            m.agents.clone(),
        );
        m
    }

    /// Handles recording into families nobody serves.
    pub fn unregistered() -> CoordinatorMetrics {
        CoordinatorMetrics::register(&mut Registry::default(), false)
    }

    /// Sets `walplayer_agents` from the roster.
    pub(crate) fn agents(&self, roster: &Roster) {
        let mut counts = [0i64; STATES.len()];
        for state in roster.states() {
            let i = match state {
                State::Registered => 0,
                State::Preparing => 1,
                State::Ready => 2,
                State::Running => 3,
                State::Finished => 4,
                State::Lost(_) => 5,
            };
            counts[i] += 1;
        }
        for (state, n) in STATES.iter().zip(counts) {
            self.agents.get_or_create(&StateLabel(state)).set(n);
        }
    }
}
