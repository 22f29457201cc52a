//! End-to-end tests: the built binaries, sinks, coordinators, agents and
//! PostgreSQL, on loopback or in network namespaces the tests create.
//!
//! One test binary, a module per area; [`util`] gives each test its own
//! temporary directory, certificates and processes, all bounded in time.

mod util;

mod bad_input;
mod cancel;
mod configuration;
mod control;
mod distributed;
mod faults;
mod guarantees;
mod hostile;
mod logs;
mod metrics;
mod multihost;
mod play;
mod postgres;
mod proxy;
mod quickstart;
mod report;
mod simulate;
mod sink;
mod troubleshooting;
