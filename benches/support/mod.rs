//! What the in-process benchmarks share: their arguments and the process's peak RSS.

/// (hosts, full run): `cargo bench` passes `--bench` (a full run of 10,000 hosts, or
/// `--hosts N`); `cargo test --all-targets` runs a benchmark as a quick smoke test of 300.
pub fn args() -> (usize, bool) {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let hosts = args
        .iter()
        .position(|a| a == "--hosts")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 10_000 } else { 300 });
    (hosts, full)
}

/// The process's peak resident set size so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
