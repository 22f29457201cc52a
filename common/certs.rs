//! Development certificates (being written).
