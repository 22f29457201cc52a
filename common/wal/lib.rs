//! WAL format: the lowest layer of walplayer; it knows PostgreSQL's WAL
//! files and nothing of Klio, gRPC or the network.
//!
//! # Layout
//!
//! - [`walname`]: WAL file names, segment sizes, LSNs, and the name rules
//!   every layer checks (Klio's name alphabet, cluster, agent and run
//!   names).
//! - [`generate`]: synthetic WAL segments with valid page headers, stopped
//!   between pages by a cancellation token.
//! - [`rng`]: a small seeded generator for deterministic output.
//! - [`source`]: the WAL files of a directory and the reader that yields a
//!   segment's bytes (plain, or every member of a gzip file via [`gzip`]).

pub mod generate;
pub mod gzip;
pub mod rng;
pub mod source;
pub mod walname;
