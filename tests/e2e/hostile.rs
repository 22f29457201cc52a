//! Hostile peers, speaking the wire protocols directly: what they send must
//! never make a wrong file count as stored.

mod coordinator;
mod input;
mod roles;
mod sink;
