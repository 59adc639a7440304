//! The open-file limit (RLIMIT_NOFILE) against the connection caps. systemd and many shells
//! start services with a soft limit of 1,024 while `server.max_connections` is 4,096: past the
//! limit, `accept` fails with EMFILE and every connection — `/healthz` included — suffers. At
//! start the soft limit is raised to the hard limit, and a webhook cap that still does not fit
//! (with room for the admin listener and the brokers' and stores' sockets) is lowered, loudly.

/// File descriptors kept free for everything but client connections: listeners, broker and
/// store connections (librdkafka opens one per broker, plus its wake-up pipes), log files, the
/// resolver.
pub const RESERVE: u64 = 64;

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force, or
/// `None` where it cannot be read (not unix).
pub fn raise_to_hard() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The webhook connection cap that fits in `nofile` descriptors beside `admin_connections`
/// and [`RESERVE`] (at least 1).
pub fn fitting_cap(max_connections: usize, admin_connections: usize, nofile: u64) -> usize {
    let room = nofile.saturating_sub(RESERVE + admin_connections as u64);
    (max_connections as u64).min(room).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_limit() {
        assert_eq!(fitting_cap(4096, 64, 1024), 1024 - 64 - 64);
        assert_eq!(fitting_cap(4096, 64, 1 << 20), 4096);
        assert_eq!(fitting_cap(4096, 64, 10), 1);
    }
}
