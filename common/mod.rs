//! Common: everything one process needs to generate WAL and play it to Klio.
//!
//! # Layout
//!
//! Data flows one way: [`source`] (files of a directory) or [`generate`]
//! → [`pipeline`] (N jobs, each running [`upload`] over a [`klio`]
//! connection) → [`report`] per file → JSON lines, [`stats`] and
//! [`progress`]. [`play`] is that flow as a command; the agent runs the
//! same pipeline and sends its reports to the coordinator instead.
//!
//! - [`walname`]: WAL file names, segment sizes, LSNs, Klio's name rules.
//! - [`generate`]: synthetic WAL segments with valid page headers.
//! - [`config`]: Klio client settings from file, environment and flags.
//! - [`tls`]: rustls configurations from PEM files.
//! - [`klio`]: connections to a Klio WAL server, with its transport limits.
//! - [`transport`]: TCP, optional rustls and HTTP/2 settings under every
//!   channel, either side.
//! - [`verify`]: read-back of stored files (`--verify`).
//! - [`sink`]: a Klio-compatible WAL server for tests and demos.
//! - [`certs`]: a development CA with server, client, coordinator and agent
//!   certificates.
//! - [`cli`]: flags shared by the binaries; [`quickstart`]: the demo;
//!   [`alloc`]: allocator tuning for block-sized buffers.

pub mod alloc;
pub mod certs;
pub mod cli;
pub mod config;
pub mod generate;
pub mod klio;
pub mod pipeline;
pub mod play;
pub mod progress;
pub mod quickstart;
pub mod report;
pub mod sink;
pub mod source;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod upload;
pub mod verify;
pub mod walname;
