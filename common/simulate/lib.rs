//! Simulated PostgreSQL clusters: each an open-loop WAL producer streaming
//! its segments to Klio as Klio's WAL sender does, with archive lag and
//! backlog measured against the schedule (no coordinated omission), SLOs,
//! and a capacity search. Depends on the WAL format and Klio client layers.
//!
//! # Layout
//!
//! Data flows one way: [`workload`] (what to run) → [`pace`] (when each
//! cluster's bytes exist, at a [`rate`]) → [`cluster`] (one Put per
//! segment, blocks on a flush schedule) → [`record`] (lag, backlog,
//! timeline) → [`summary`] and [`segments`] (JSON lines), checked against
//! [`slo`]s. [`run`] is the engine; [`drive`] runs it for a duration or as
//! a capacity search.

pub mod cluster;
pub mod drive;
pub mod flags;
pub mod pace;
pub mod parts;
pub mod rate;
pub mod record;
pub mod run;
pub mod segments;
pub mod slo;
pub mod step;
pub mod summary;
pub mod wire;
pub mod workload;
