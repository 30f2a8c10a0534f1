//! Rollout wave layout (DESIGN 6.2): which of an environment's changing hosts go in which
//! wave. Pure: the same hosts and targets always give the same layout, so a stored layout can
//! be compared with a fresh plan.

/// One entry of `rollout.waves`. Targets are cumulative: each says how many hosts in total
/// have been reached once that wave is done, not how many the wave adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaveTarget {
    /// That many hosts in total so far.
    Count(u32),
    /// That share of all changing hosts, rounded up so a small percentage of a small fleet
    /// still reaches at least one host. Validation keeps it within 1..=100; larger values are
    /// treated as 100.
    Percent(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveHost<'a> {
    pub name: &'a str,
    /// Canaries go first so that they are the hosts the first waves try.
    pub canary: bool,
}

/// Returns waves as lists of host names: hosts ordered canaries first, then by name; each
/// target is cumulative (count = that many hosts in total so far; percent = share of all
/// changing hosts rounded UP); waves adding no host are dropped; a final 100% is implied.
///
/// Targets that go down (possible when counts and percentages are mixed) add no host and so
/// are dropped like any other empty wave. Names are expected to be distinct; duplicates are
/// kept and placed like any other host.
pub fn layout<'a>(hosts: &[WaveHost<'a>], targets: &[WaveTarget]) -> Vec<Vec<&'a str>> {
    let mut ordered: Vec<WaveHost<'a>> = hosts.to_vec();
    ordered.sort_by(|a, b| b.canary.cmp(&a.canary).then_with(|| a.name.cmp(b.name)));
    let total = ordered.len();

    let mut waves = Vec::new();
    let mut reached = 0;
    for target in targets.iter().map(|t| cumulative(*t, total)).chain([total]) {
        if target > reached {
            waves.push(ordered[reached..target].iter().map(|h| h.name).collect());
            reached = target;
        }
    }
    waves
}

/// The number of hosts `target` asks for in total, never more than there are.
pub fn cumulative(target: WaveTarget, total: usize) -> usize {
    match target {
        WaveTarget::Count(n) => usize::try_from(n).unwrap_or(usize::MAX).min(total),
        WaveTarget::Percent(p) => (total * usize::from(p.min(100))).div_ceil(100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn hosts<'a>(names: &[&'a str]) -> Vec<WaveHost<'a>> {
        names
            .iter()
            .map(|name| WaveHost { name, canary: false })
            .collect()
    }

    fn numbered(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("web-{i:03}")).collect()
    }

    fn plain(names: &[String]) -> Vec<WaveHost<'_>> {
        names
            .iter()
            .map(|n| WaveHost {
                name: n,
                canary: false,
            })
            .collect()
    }

    fn sizes(waves: &[Vec<&str>]) -> Vec<usize> {
        waves.iter().map(Vec::len).collect()
    }

    use WaveTarget::{Count, Percent};

    #[test]
    fn no_hosts_no_waves() {
        assert!(layout(&[], &[Count(1), Percent(100)]).is_empty());
        assert!(layout(&[], &[]).is_empty());
    }

    #[test]
    fn no_targets_is_one_wave_of_everything() {
        let h = hosts(&["b", "a", "c"]);
        assert_eq!(layout(&h, &[]), vec![vec!["a", "b", "c"]]);
    }

    #[test]
    fn the_default_one_then_the_rest() {
        let names = numbered(40);
        let w = layout(&plain(&names), &[Count(1), Percent(100)]);
        assert_eq!(sizes(&w), vec![1, 39]);
        assert_eq!(w[0], vec!["web-001"]);
    }

    #[test]
    fn targets_are_cumulative() {
        let names = numbered(40);
        // 1, 25% of 40 = 10 in total, then 100%.
        let w = layout(&plain(&names), &[Count(1), Percent(25), Percent(100)]);
        assert_eq!(sizes(&w), vec![1, 9, 30]);
        let w = layout(&plain(&names), &[Count(2), Count(5), Count(20)]);
        assert_eq!(sizes(&w), vec![2, 3, 15, 20], "final 100% implied");
    }

    #[test]
    fn percent_rounds_up() {
        let names = numbered(7);
        // 10% of 7 = 0.7 -> 1; 50% -> 3.5 -> 4.
        let w = layout(&plain(&names), &[Percent(10), Percent(50)]);
        assert_eq!(sizes(&w), vec![1, 3, 3]);
        let names = numbered(200);
        let w = layout(&plain(&names), &[Percent(1)]);
        assert_eq!(sizes(&w), vec![2, 198]);
    }

    #[test]
    fn waves_adding_nobody_are_dropped() {
        let names = numbered(3);
        // 1, 1 (nothing new), 50% = 2, 10 (capped at 3), 100% (nothing new).
        let w = layout(
            &plain(&names),
            &[Count(1), Count(1), Percent(50), Count(10), Percent(100)],
        );
        assert_eq!(w, vec![vec!["web-001"], vec!["web-002"], vec!["web-003"]]);
        // Count(0) adds nobody either.
        let w = layout(&plain(&names), &[Count(0), Count(2)]);
        assert_eq!(sizes(&w), vec![2, 1]);
    }

    #[test]
    fn decreasing_mixed_targets_add_nobody() {
        let names = numbered(10);
        // 50% = 5, then 3 (below what is reached), then 8.
        let w = layout(&plain(&names), &[Percent(50), Count(3), Count(8)]);
        assert_eq!(sizes(&w), vec![5, 3, 2]);
    }

    #[test]
    fn single_host_is_one_wave() {
        let h = hosts(&["only"]);
        assert_eq!(
            layout(&h, &[Count(1), Percent(25), Percent(100)]),
            vec![vec!["only"]]
        );
    }

    #[test]
    fn canaries_first_then_by_name() {
        let h = vec![
            WaveHost {
                name: "c",
                canary: false,
            },
            WaveHost {
                name: "z-canary",
                canary: true,
            },
            WaveHost {
                name: "a",
                canary: false,
            },
            WaveHost {
                name: "m-canary",
                canary: true,
            },
        ];
        let w = layout(&h, &[Count(1), Count(3)]);
        assert_eq!(w, vec![vec!["m-canary"], vec!["z-canary", "a"], vec!["c"]]);
    }

    #[test]
    fn over_hundred_percent_is_everything() {
        let names = numbered(4);
        assert_eq!(sizes(&layout(&plain(&names), &[Percent(255)])), vec![4]);
        assert_eq!(sizes(&layout(&plain(&names), &[Count(u32::MAX)])), vec![4]);
    }

    fn target() -> impl Strategy<Value = WaveTarget> {
        prop_oneof![(0u32..60).prop_map(Count), (1u8..=100).prop_map(Percent)]
    }

    proptest! {
        #[test]
        fn layout_properties(
            host_spec in prop::collection::btree_map("[a-z]{1,6}", any::<bool>(), 0..50),
            targets in prop::collection::vec(target(), 0..6),
        ) {
            let h: Vec<WaveHost<'_>> = host_spec.iter().rev().map(|(n, c)| WaveHost { name: n, canary: *c }).collect();
            let waves = layout(&h, &targets);
            let total = h.len();

            // Every host in exactly one wave.
            let flat: Vec<&str> = waves.iter().flatten().copied().collect();
            prop_assert_eq!(flat.len(), total);
            let set: BTreeSet<&str> = flat.iter().copied().collect();
            prop_assert_eq!(set.len(), total);
            prop_assert!(h.iter().all(|x| set.contains(x.name)));

            // No empty wave; no hosts, no waves.
            prop_assert!(waves.iter().all(|w| !w.is_empty()));
            prop_assert_eq!(waves.is_empty(), total == 0);

            // Order: canaries first, then by name, across the waves in order.
            let mut expected: Vec<&WaveHost<'_>> = h.iter().collect();
            expected.sort_by_key(|x| (!x.canary, x.name));
            let expected: Vec<&str> = expected.iter().map(|x| x.name).collect();
            prop_assert_eq!(&flat, &expected);

            // Wave ends are exactly the distinct increasing cumulative targets, then all.
            let mut ends = Vec::new();
            let mut reached = 0;
            for t in &targets {
                let want = match *t {
                    Count(n) => (n as usize).min(total),
                    Percent(p) => (total * p as usize).div_ceil(100),
                };
                // Percent rounds up: never less than the exact share.
                if let Percent(p) = *t {
                    prop_assert!(want * 100 >= total * p as usize);
                }
                if want > reached {
                    ends.push(want);
                    reached = want;
                }
            }
            if total > reached {
                ends.push(total);
            }
            let actual: Vec<usize> = waves.iter().scan(0, |acc, w| { *acc += w.len(); Some(*acc) }).collect();
            prop_assert_eq!(actual, ends);
        }
    }
}
