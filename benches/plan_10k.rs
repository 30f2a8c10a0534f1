//! Benchmark: load + validate + resolve + diff + render (text and JSON) for a generated fleet
//! of 10,000 hosts, 3 environments and 50 runtimes, with observations held in memory (the
//! previous revision's desired state, so a third of the fleet has a change). Prints wall time
//! per phase (best of N) and the process's peak RSS.
//!
//! Run: `cargo bench --bench plan_10k` (add `-- --hosts 20000` to scale).

#[path = "../examples/gen_fleet.rs"]
#[allow(dead_code)]
mod gen_fleet;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use flotilla::hoststate::{FileState, HostState, RuntimeState};
use flotilla::manifest::model::Pin;
use flotilla::observe::{Observation, ObservedFile, ObservedRuntime};
use flotilla::plan::{self, HostInput, PlanInput};

fn observation_from(d: &flotilla::resolve::DesiredHost, bump: bool) -> Observation {
    let mut o = Observation::default();
    for (name, pin) in &d.runtimes {
        if let Pin::Version(v) = &pin.value {
            // The previous revision ran another version of the first runtime on some hosts.
            let current = if bump && o.runtimes.is_empty() {
                "0.0.1".to_owned()
            } else {
                v.to_string()
            };
            o.runtimes.insert(
                name.to_string(),
                ObservedRuntime {
                    versions: [current.clone()].into_iter().collect(),
                    current: Some(current),
                },
            );
        }
    }
    let mut state = HostState {
        format_version: 1,
        fleet: "bench".into(),
        host: d.name.to_string(),
        revision: None,
        applied_at: "2026-11-01T00:00:00Z".into(),
        store_id: "bench".into(),
        epoch: 1,
        runtimes: Default::default(),
        files: Default::default(),
        pending: None,
    };
    for (name, rt) in &o.runtimes {
        let active = rt.current.clone().unwrap_or_default();
        state.runtimes.insert(
            name.clone(),
            RuntimeState {
                active,
                previous: None,
                sha256: String::new(),
            },
        );
    }
    for (path, f) in &d.files {
        state.files.insert(
            path.to_string(),
            FileState {
                sha256: f.value.sha256.clone(),
                mode: f.value.mode,
                owner: None,
                group: None,
                took_over: false,
            },
        );
        o.files.insert(
            path.clone(),
            ObservedFile::Regular {
                sha256: f.value.sha256.clone(),
                mode: Some(f.value.mode),
                owner: f.value.owner.clone(),
                group: f.value.group.clone(),
                size: f.value.content.len() as u64,
                content: None,
            },
        );
    }
    o.state = Some(state);
    o
}

fn main() {
    let (hosts, full) = support::args();
    let iterations = if full { 5 } else { 1 };
    let dir = tempfile::tempdir().expect("tempdir");
    gen_fleet::generate(dir.path(), hosts, 50).expect("generate the fleet");

    let mut best = [Duration::MAX; 4];
    let mut summary = String::new();
    for _ in 0..iterations {
        let t0 = Instant::now();
        let repo = flotilla::repo::FleetRepo::open(dir.path(), None).expect("open");
        let loaded = match flotilla::load::load(&repo) {
            Ok(l) => l,
            Err(e) => panic!("the generated fleet is invalid: {e}"),
        };
        let t1 = Instant::now();
        let observed: Vec<Observation> = loaded
            .desired
            .iter()
            .enumerate()
            .map(|(i, d)| observation_from(d, i % 3 == 0))
            .collect();
        let t2 = Instant::now();
        let now = jiff::Timestamp::now();
        let inputs = loaded
            .desired
            .iter()
            .zip(&observed)
            .map(|(d, o)| HostInput {
                desired: d,
                observed: Ok(o),
                refused: None,
                take_over: false,
            })
            .collect();
        let p = plan::build(&PlanInput {
            fleet: &loaded.fleet,
            revision: None,
            hosts: inputs,
            at: now,
            observed_at: now,
            all_desired: &loaded.desired,
            promotions: &[],
            halts: &Default::default(),
        });
        let t3 = Instant::now();
        let text = plan::text::render(&p, plan::text::TextOptions::default());
        let json = p.to_json();
        let t4 = Instant::now();
        for (b, d) in best.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
            *b = (*b).min(d);
        }
        summary = format!(
            "{} hosts, {} changing; text plan {} KiB, JSON plan {} KiB; last line: {}",
            p.summary.hosts_total,
            p.summary.hosts_changed,
            text.len() / 1024,
            json.len() / 1024,
            text.lines().last().unwrap_or_default()
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("plan_10k: {summary}");
    println!("  load + validate + resolve : {:8.1} ms", ms(best[0]));
    println!("  (observations in memory)  : {:8.1} ms", ms(best[1]));
    println!("  diff + waves + windows    : {:8.1} ms", ms(best[2]));
    println!("  render text + JSON        : {:8.1} ms", ms(best[3]));
    println!(
        "  total (excluding setup)   : {:8.1} ms",
        ms(best[0] + best[2] + best[3])
    );
    println!(
        "  peak RSS                  : {:8.1} MiB",
        support::peak_rss_mib()
    );
}
