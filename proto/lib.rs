//! Generated protocol code, included once.

/// `klio.wal.v1`: Klio's WAL service (Put, Get).
pub mod klio {
    tonic::include_proto!("klio.wal.v1");
}

/// `walplayer.control.v1`: coordinator/agent control channel.
pub mod control {
    tonic::include_proto!("walplayer.control.v1");
}
