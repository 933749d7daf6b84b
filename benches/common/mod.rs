//! Helpers shared by the benchmarks.
#![allow(dead_code)] // each benchmark uses a subset

/// Peak resident set of this process so far, MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self")
}

/// Peak resident set of process `pid` (a number, or `self`) so far, MiB.
pub fn peak_rss_mib_of(pid: &str) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Current resident set of process `pid`, MiB.
pub fn rss_mib_of(pid: &str) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
