//! What the kernel says about this process (`/proc/self`): memory, file
//! descriptors and CPU time, for `/stats`' memory block, statsd and
//! `/metrics`. Every reader answers 0 where `/proc` is missing (non-Linux).

use std::fs;

/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks, which the kernel
/// ABI fixes at 100 on every architecture Rust supports there.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub cpu_seconds: f64,
    /// Unix seconds.
    pub start_time: f64,
}

/// A `Name:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_kb(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size in bytes.
pub fn resident_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .map(|s| status_kb(&s, "VmRSS:"))
        .unwrap_or(0)
}

/// (user+system CPU seconds, start time in seconds since boot) from
/// `/proc/self/stat`. The command name may contain spaces and parentheses,
/// so fields are counted from the last `)`.
fn stat_times(stat: &str) -> (f64, f64) {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (0.0, 0.0);
    };
    // After the name: field 3 (state) is index 0, utime (14) is 11, stime
    // (15) is 12, starttime (22) is 19.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ((num(11) + num(12)) / USER_HZ, num(19) / USER_HZ)
}

fn boot_time() -> f64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// The soft limit on open files (`Max open files` in `/proc/self/limits`).
fn max_fds(limits: &str) -> u64 {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn stats() -> ProcessStats {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let (cpu_seconds, start_since_boot) =
        stat_times(&fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let open_fds = fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let boot = boot_time();
    ProcessStats {
        resident_bytes: status_kb(&status, "VmRSS:"),
        virtual_bytes: status_kb(&status, "VmSize:"),
        open_fds,
        max_fds: max_fds(&fs::read_to_string("/proc/self/limits").unwrap_or_default()),
        cpu_seconds,
        start_time: if boot > 0.0 {
            boot + start_since_boot
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let status = "Name:\tnsqd\nVmSize:\t  2048 kB\nVmRSS:\t   512 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), 512 * 1024);
        assert_eq!(status_kb(status, "VmSize:"), 2048 * 1024);
        assert_eq!(status_kb(status, "VmSwap:"), 0);
        let stat =
            "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 0 0";
        assert_eq!(stat_times(stat), (3.0, 10.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), 1024);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = stats();
        assert!(s.resident_bytes > 0);
        assert!(s.open_fds > 0);
        assert!(s.start_time > 1_000_000_000.0);
    }
}
