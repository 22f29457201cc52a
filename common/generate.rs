//! Synthetic WAL segments (being written).
