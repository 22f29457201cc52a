//! Common: everything one process needs to generate WAL and play it to Klio.
//!
//! # Layout
//!
//! - [`walname`]: WAL file names, segment sizes, LSNs, Klio's name rules.
//! - [`generate`]: synthetic WAL segments with valid page headers.
//! - [`certs`]: a development CA with server and client certificates.

pub mod certs;
pub mod generate;
pub mod walname;
