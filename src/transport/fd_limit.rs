//! Process limits: each connection holds a file descriptor, and the usual
//! soft limit (1024 on Linux, 256 on macOS) would cap a large fleet.

/// Raises the soft limit on open files to the hard limit; returns the new
/// soft limit (or the old one if it cannot be raised).
#[allow(unsafe_code)]
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn raises_to_the_hard_limit() {
        let soft = super::raise_open_files();
        assert!(soft >= 256, "{soft}");
        assert_eq!(super::raise_open_files(), soft, "idempotent");
    }
}
