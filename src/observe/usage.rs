//! What the probe says about how busy a host is (DESIGN §6.4 `host_limits`): the one-minute
//! load average per CPU and the share of memory in use, read from /proc and /sys on the host.
//! The text is the host's, hence untrusted: anything but the expected numbers is unknown.

/// A host's usage, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// One-minute load average over the number of online CPUs (may exceed 100).
    pub cpu: Option<u32>,
    /// Memory in use: (MemTotal − MemAvailable) / MemTotal.
    pub memory: Option<u8>,
}

/// Parses the probe's `usage` record: "LOAD1 CPUS MEMTOTAL_KB MEMAVAILABLE_KB", "-" for what
/// the host could not tell. `None` when nothing at all is known.
pub fn parse(payload: &[u8]) -> Option<Usage> {
    if payload.len() > 256 {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let f: Vec<&str> = text.split_whitespace().collect();
    let [load, cpus, total, available] = f.as_slice() else {
        return None;
    };
    let cpu = match (load.parse::<f64>(), cpus.parse::<u32>()) {
        (Ok(l), Ok(n)) if n > 0 && l.is_finite() && l >= 0.0 => {
            Some((l * 100.0 / f64::from(n)).round().min(f64::from(u32::MAX)) as u32)
        }
        _ => None,
    };
    let memory = match (total.parse::<u64>(), available.parse::<u64>()) {
        (Ok(t), Ok(a)) if t > 0 && a <= t => Some(((t - a) as f64 * 100.0 / t as f64).round() as u8),
        _ => None,
    };
    (cpu.is_some() || memory.is_some()).then_some(Usage { cpu, memory })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_per_cpu_and_memory_is_the_share_in_use() {
        let u = parse(b"3.00 2 1000 250").unwrap();
        assert_eq!(u.cpu, Some(150));
        assert_eq!(u.memory, Some(75));
        let u = parse(b"0.10 - 1000 1000").unwrap();
        assert_eq!((u.cpu, u.memory), (None, Some(0)));
    }

    #[test]
    fn what_a_host_cannot_tell_or_garbles_is_unknown_not_an_error() {
        for bad in [
            &b"- 0 - -"[..],
            b"",
            b"1 2 3",
            b"nan 2 10 5x",
            b"-1 2 10 20",
            b"1 0 10 20",
            &[b'9'; 300],
        ] {
            let u = parse(bad);
            assert!(
                u.is_none_or(|u| u.cpu.is_none() || u.memory.is_none()),
                "{bad:?}: {u:?}"
            );
        }
        assert_eq!(parse(b"inf 2 - -"), None);
    }
}
