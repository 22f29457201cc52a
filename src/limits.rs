//! Process limits a load tool must not inherit: a soft open-files limit of
//! 1,024 lets a few hundred idle peers lock every other client out of a
//! sink, and caps how many connections a player or an agent can hold.

/// Raises the soft open-files limit to the hard one and says so; returns
/// the limit now in force (None if it cannot be read).
pub fn raise_open_files() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we
    // pass, which lives for the duration of each call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur >= limit.rlim_max {
            return Some(limit.rlim_cur);
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            tracing::warn!(
                "open-files limit stays at {before}: raising it to {} failed",
                limit.rlim_max
            );
            return Some(before);
        }
        tracing::info!(
            "open-files limit raised from {before} to {} (the hard limit)",
            limit.rlim_cur
        );
        Some(limit.rlim_cur)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let now = super::raise_open_files().expect("the limit can be read");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(now, limit.rlim_cur);
    }
}
