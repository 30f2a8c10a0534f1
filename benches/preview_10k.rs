//! Benchmark: `flotilla preview --against manifests` of a generated 10,000-host fleet (3
//! environments, 50 runtimes) where the pull request touches every host: each environment's
//! runtimes move from 1.1.0 to 2.0.0 and its templated config file gains a line. Both
//! revisions are real commits read from Git objects. Prints wall time per phase (best of N),
//! the comment's size and the process's peak RSS. Budget (issue 12): ≤ 2 s, ≤ 400 MB.
//!
//! Run: `cargo bench --bench preview_10k` (add `-- --hosts 20000` to scale).

#[path = "../examples/gen_fleet.rs"]
#[allow(dead_code)]
mod gen_fleet;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

/// Adds everything and commits it on HEAD; returns the commit id.
fn commit(dir: &Path, message: &str) -> String {
    let repo = git2::Repository::open(dir)
        .or_else(|_| git2::Repository::init(dir))
        .expect("git init");
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("write index");
    let tree = repo.find_tree(index.write_tree().expect("tree")).expect("tree");
    let sig = git2::Signature::now("Bench", "bench@example.invalid").expect("signature");
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .expect("commit")
        .to_string()
}

/// The pull request: every environment's runtimes to 2.0.0 and one more line in the
/// templated file every host has.
fn touch_every_host(dir: &Path) {
    for env in ["staging", "prod-eu", "prod-us"] {
        let path = dir.join(format!("environments/{env}.toml"));
        let text = std::fs::read_to_string(&path).expect("read environment");
        let text = text.replace("= \"1.1.0\"", "= \"2.0.0\"").replace(
            "zone = {{ host.labels.zone }}\n",
            "zone = {{ host.labels.zone }}\nlog = info\n",
        );
        std::fs::write(&path, text).expect("write environment");
    }
}

fn main() {
    let (hosts, full) = support::args();
    let iterations = if full { 3 } else { 1 };
    let dir = tempfile::tempdir().expect("tempdir");
    gen_fleet::generate(dir.path(), hosts, 50).expect("generate the fleet");
    let base = commit(dir.path(), "base");
    touch_every_host(dir.path());
    let head = commit(dir.path(), "every host");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let no_store = |_: &str| Ok(None);
    let mut best = [Duration::MAX; 2];
    let mut summary = String::new();
    let mut last = None;
    for _ in 0..iterations {
        drop(last.take());
        let t0 = Instant::now();
        let req = flotilla::preview::Request {
            fleet_dir: dir.path(),
            base: &base,
            head: &head,
            against: flotilla::preview::Against::Manifests,
            at: None,
            clock: flotilla::clock::Clock::wall(),
            store: &no_store,
            parallel: 64,
            identity_file: None,
            known_hosts: None,
            pinned_keys: None,
        };
        let p = runtime
            .block_on(flotilla::preview::preview(&req))
            .expect("preview");
        let t1 = Instant::now();
        let md = flotilla::preview::render::markdown(&p);
        let t2 = Instant::now();
        for (b, d) in best.iter_mut().zip([t1 - t0, t2 - t1]) {
            *b = (*b).min(d);
        }
        let plan = p.plan.as_ref().expect("a valid head");
        assert_eq!(
            plan.summary.hosts_changed, plan.summary.hosts_total,
            "every host changes"
        );
        summary = format!(
            "{} hosts, {} changing; comment {} characters; {}",
            plan.summary.hosts_total,
            plan.summary.hosts_changed,
            md.chars().count(),
            plan.summary_line()
        );
        last = Some(p);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("preview_10k: {summary}");
    println!(
        "  read both revisions + plan + notices + forecast : {:8.1} ms",
        ms(best[0])
    );
    println!(
        "  render markdown (the comment)                   : {:8.1} ms",
        ms(best[1])
    );
    println!(
        "  total                                           : {:8.1} ms",
        ms(best[0] + best[1])
    );
    println!(
        "  peak RSS                                        : {:8.1} MiB",
        support::peak_rss_mib()
    );
    // `--format json` instead: the whole plan (every host's changes) as one document.
    let p = last.expect("one iteration");
    let t = Instant::now();
    let json = flotilla::preview::render::json(&p);
    println!(
        "  render JSON instead ({} KiB)                 : {:8.1} ms, peak RSS then {:.1} MiB",
        json.len() / 1024,
        ms(t.elapsed()),
        support::peak_rss_mib()
    );
}
