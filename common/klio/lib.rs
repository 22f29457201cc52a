//! Klio client: everything one process needs to play WAL to a Klio
//! server. Depends on the WAL format layer ([`walplayer_wal`]) only.
//!
//! # Layout
//!
//! Data flows one way: segments ([`walplayer_wal::source`]) → [`pipeline`]
//! (N jobs, each running [`upload`] over an [`endpoint`] connection) →
//! [`report`] per file → [`driver`] (the report loop shared by `play` and
//! the agent) → a destination (JSON lines, or the control stream), with
//! [`stats`] kept on the way.
//!
//! - [`config`]: Klio client settings from file, environment and flags.
//! - [`flags`]: the command-line flags for those settings and for uploads.
//! - [`tls`]: rustls configurations from PEM files; [`role`]: the role a
//!   certificate carries and which roles each server takes.
//! - [`transport`]: TCP, optional rustls and HTTP/2 settings under every
//!   channel, either side.
//! - [`endpoint`]: connections to a Klio WAL server, with its limits.
//! - [`put`]: one Put stream, blocks sent without a copy; [`upload`]: one
//!   Put per file, retries; [`file_read`]: a file's chunks, read without
//!   blocking the runtime; [`verify`]: read-back.
//! - [`memory`]: the memory N jobs need, checked against `--max-memory`.
//! - [`settings`]: block size, jobs and upload settings as validated types.
//! - [`output`]: result and summary files.
//! - [`timeline`]: a run second by second; [`buckets`]: log-spaced
//!   histograms for summaries and charts.
//! - [`progress`]: what a progress display is told.
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`console`]: what a command says on stderr besides its logs.

pub mod buckets;
pub mod config;
pub mod console;
pub mod driver;
pub mod endpoint;
pub mod exit;
pub mod file_read;
pub mod flags;
pub mod memory;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod put;
pub mod report;
pub mod role;
pub mod settings;
pub mod stats;
pub mod timeline;
pub mod tls;
pub mod transport;
pub mod upload;
pub mod verify;
pub mod wire;
