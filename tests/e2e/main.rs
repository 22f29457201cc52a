//! End-to-end tests: the built binaries, a sink and PostgreSQL on loopback.
//!
//! One test binary, a module per area; [`util`] gives each test its own
//! temporary directory, certificates and processes, all bounded in time.

mod util;

mod bad_input;
mod distributed;
mod faults;
mod play;
mod postgres;
mod proxy;
mod sink;
