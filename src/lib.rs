//! walplayer: benchmark Klio WAL servers.
//!
//! # Layout
//!
//! - [`proto`]: the Klio WAL protocol and walplayer's control protocol,
//!   generated from `proto/` by `build.rs`.
//! - [`common`]: everything one process needs to generate WAL and play it to
//!   Klio: names, generator, configuration, TLS, the upload pipeline,
//!   reports and statistics, and the Klio-compatible sink.
//! - [`coordinator`]: splits a run across agents, holds the start barrier
//!   and merges their reports.
//! - [`agent`]: registers with a coordinator, plays its shard through the
//!   common pipeline and streams the reports back.

pub mod proto;

#[path = "../common/mod.rs"]
pub mod common;

#[path = "../coordinator/mod.rs"]
pub mod coordinator;

#[path = "../agent/mod.rs"]
pub mod agent;
