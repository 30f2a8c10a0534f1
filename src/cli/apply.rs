//! `flotilla apply` and `flotilla history`: wiring the plan, the store, the artifacts and the
//! executor together, and the views that show the executor's events.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use tokio::sync::{mpsc, watch};

use super::Outcome;
use super::args::{ApplyArgs, Cli, HistoryArgs, Source};
use super::commands::{observe_and_plan, open};
use crate::artifact::{ArtifactCache, ArtifactRequest, DEFAULT_MAX_UNPACKED, TrustPolicy};
use crate::observe::Observation;
use crate::plan::{self, Action, Kind, SavedPlan};
use crate::repo::FleetRepo;
use crate::resolve::DesiredHost;
use crate::rollout::{self, Event, Gate, HostJob, HostResult, Records, RunSpec};
use crate::store::{AuditEvent, AuditFilter, DirStore, Holder, Store};
use crate::transaction::{self, Outcome as TxnOutcome, Upload};
use crate::transport::{self, Pool};
use std::sync::Arc;

const PROMPT: &str = "Do you want to apply these changes? Only 'yes' will be accepted:";

/// The store for `fleet`: --state-dir / FLOTILLA_STATE_DIR, else the XDG default.
pub(super) fn store_dir(cli: &Cli, fleet: &str) -> anyhow::Result<PathBuf> {
    if let Some(d) = &cli.global.state_dir {
        return Ok(d.clone());
    }
    crate::store::default_dir(
        std::env::var_os("XDG_STATE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
        fleet,
    )
    .context("no store directory: set --state-dir, FLOTILLA_STATE_DIR, XDG_STATE_HOME or HOME")
}

fn actor() -> String {
    let me = Holder::this_process("", jiff::Timestamp::now());
    if me.machine.is_empty() {
        me.user
    } else {
        format!("{}@{}", me.user, me.machine)
    }
}

/// An audit event of this apply, stamped now.
fn audit(revision: Option<&str>, dirty: bool, event: &str) -> AuditEvent {
    let mut e = AuditEvent::new(jiff::Timestamp::now(), &actor(), event);
    e.revision = revision.map(str::to_owned);
    e.dirty = dirty;
    e
}

/// Asks for the exact confirmation; refuses without a terminal.
fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to confirm on: run `flotilla apply --auto-approve` to apply without asking");
    }
    print!("\n{PROMPT} ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Ctrl-C and SIGTERM: no new host starts, in-flight hosts finish, state is saved.
fn watch_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("\nStopping: no new host starts; hosts in flight finish and state is saved.");
        let _ = tx.send(true);
    });
    rx
}

/// The views: indicatif on a terminal, plain lines otherwise, JSON lines with --log-format json.
fn spawn_view(cli: &Cli, mut rx: mpsc::UnboundedReceiver<Event>) -> tokio::task::JoinHandle<()> {
    let json = matches!(cli.global.log_format, super::args::LogFormat::Json);
    let terminal = std::io::stderr().is_terminal() && !json;
    tokio::spawn(async move {
        if !terminal {
            while let Some(e) = rx.recv().await {
                if json {
                    eprintln!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    eprintln!("{}", e.line());
                }
            }
            return;
        }
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let mut bars: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
        while let Some(e) = rx.recv().await {
            match &e {
                Event::HostStep { host, step } => {
                    let bar = bars.entry(host.clone()).or_insert_with(|| {
                        let b = multi.add(indicatif::ProgressBar::new_spinner());
                        b.set_style(style.clone());
                        b.set_prefix(host.clone());
                        b.enable_steady_tick(std::time::Duration::from_millis(120));
                        b
                    });
                    bar.set_message(step.clone());
                }
                Event::HostApplied { host, .. }
                | Event::HostFailed { host, .. }
                | Event::RolledBack { host, .. }
                | Event::HostSkipped { host, .. } => {
                    if let Some(b) = bars.remove(host) {
                        b.finish_and_clear();
                    }
                    let _ = multi.println(e.line());
                }
                _ => {
                    let _ = multi.println(e.line());
                }
            }
        }
    })
}

/// Hosts whose `state.json` says they are not ours to change (DESIGN §4, §7).
fn refusal(
    d: &DesiredHost,
    o: &Observation,
    fleet: &str,
    store_id: &str,
    epoch: u64,
    take_over: bool,
) -> Option<String> {
    let s = o.state.as_ref()?;
    if s.fleet != fleet || s.host != d.name.as_str() {
        return Some(format!(
            "state.json names fleet {:?} and host {:?}: this host belongs to another fleet or name; fix the manifests or clear the host",
            crate::text::sanitize(&s.fleet),
            crate::text::sanitize(&s.host)
        ));
    }
    if s.store_id != store_id && !take_over {
        return Some(format!(
            "last written by another store ({}); run `flotilla apply --take-over REASON` if this store should own it",
            crate::text::sanitize(&s.store_id)
        ));
    }
    if s.store_id == store_id && s.epoch > epoch {
        return Some(format!(
            "written by a newer apply of this store (epoch {} > {epoch}); left untouched",
            s.epoch
        ));
    }
    None
}

pub async fn apply(cli: &Cli, args: &ApplyArgs, color: bool) -> anyhow::Result<Outcome> {
    loop {
        // One session per host for the whole apply, closed on every way out.
        let pool = Arc::new(Pool::new());
        let mut wake = None;
        let result = apply_with(cli, args, color, &pool, &mut wake).await;
        pool.close_all().await;
        match result {
            Ok(Outcome::Waiting) if args.wait => sleep_until(wake).await?,
            other => return other,
        }
    }
}

/// `--wait`: sleeps, holding no lock and no connection, until the next moment changes may go,
/// with a countdown; then the apply starts over (observing again).
async fn sleep_until(wake: Option<jiff::Timestamp>) -> anyhow::Result<()> {
    // Promotion soaks and holds without a known time are re-checked every minute.
    let wake = wake.unwrap_or_else(|| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60));
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = None;
    loop {
        let left = wake.duration_since(jiff::Timestamp::now());
        if left <= jiff::SignedDuration::ZERO {
            if terminal {
                eprintln!();
            }
            return Ok(());
        }
        let text = format!(
            "Waiting until {} ({}); Ctrl-C to stop",
            wake.strftime("%Y-%m-%d %H:%M:%S UTC"),
            crate::schedule::window::format_countdown(left)
        );
        if terminal {
            eprint!("\r{text}   ");
        } else if last_line
            .is_none_or(|at: jiff::Timestamp| jiff::Timestamp::now().duration_since(at).as_secs() >= 60)
        {
            eprintln!("{text}");
            last_line = Some(jiff::Timestamp::now());
        }
        let step = std::time::Duration::from_secs(1).min(left.unsigned_abs());
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = tokio::signal::ctrl_c() => anyhow::bail!("stopped while waiting; nothing was changed while waiting"),
        }
    }
}

async fn apply_with(
    cli: &Cli,
    args: &ApplyArgs,
    color: bool,
    pool: &Arc<Pool>,
    wake: &mut Option<jiff::Timestamp>,
) -> anyhow::Result<Outcome> {
    let saved: Option<SavedPlan> = match &args.plan {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the saved plan {}", p.display()))?;
            let saved: SavedPlan = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a plan saved by `flotilla plan --out`", p.display()))?;
            if saved.plan.revision.is_none() {
                bail!(
                    "{} is a plan of an uncommitted tree, which cannot be applied later: commit, then `flotilla plan --out` again",
                    p.display()
                );
            }
            Some(saved)
        }
        None => None,
    };
    let source = Source {
        fleet_dir: args.source.fleet_dir.clone(),
        rev: saved
            .as_ref()
            .and_then(|s| s.plan.revision.clone())
            .or(args.source.rev.clone()),
    };
    let (repo, loaded) = match open(cli, &source, color)? {
        Ok(x) => x,
        Err(o) => return Ok(o),
    };
    if source.rev.is_none() && repo.is_dirty() && !args.allow_dirty {
        bail!(
            "the fleet directory has uncommitted changes: commit them, or pass --allow-dirty to apply the working tree as it is"
        );
    }
    if let Some(s) = &saved
        && s.plan.fleet != loaded.fleet.name.as_str()
    {
        bail!(
            "the saved plan is for fleet {:?}, but {} holds fleet {}",
            s.plan.fleet,
            args.source.fleet_dir.display(),
            loaded.fleet.name
        );
    }
    let dirty = source.rev.is_none() && repo.is_dirty();
    let revision = repo.revision().map(str::to_owned);

    let store = DirStore::open(&store_dir(cli, loaded.fleet.name.as_str())?)?;
    let holder = Holder {
        pid: std::process::id(),
        machine: std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        user: std::env::var("USER").unwrap_or_default(),
        since: jiff::Timestamp::now(),
        command: "flotilla apply".into(),
    };
    let _lock = store.lock(&holder)?;

    // A saved plan names its hosts; otherwise the targeting flags pick them.
    let targets: Vec<&DesiredHost> = match &saved {
        Some(s) => loaded
            .desired
            .iter()
            .filter(|h| {
                s.plan
                    .hosts
                    .iter()
                    .any(|p| p.name == h.name.as_str() && !p.changes.is_empty())
            })
            .collect(),
        None => super::commands::select(&loaded, &args.targeting)?,
    };

    let parallel = cli.global.parallel as usize;
    let mut now = jiff::Timestamp::now();
    let observe = async |now| {
        let promotions = store.promotions()?;
        anyhow::Ok(observe_and_plan(&loaded, &repo, &targets, pool, &promotions, parallel, now).await)
    };
    let (mut observations, mut plan) = observe(now).await?;
    // Hosts a killed transaction left `pending` are restored first, then planned as usual.
    if recover_interrupted(&repo, &targets, &observations, pool).await {
        now = jiff::Timestamp::now();
        (observations, plan) = observe(now).await?;
    }
    plan.no_longer_managed = super::commands::no_longer_managed(cli, &loaded);

    // With a saved plan, a host changes only if it is exactly as it was planned.
    let mut stale: BTreeMap<String, String> = BTreeMap::new();
    if let Some(s) = &saved {
        for h in &plan.hosts {
            let Some(old) = s.plan.hosts.iter().find(|p| p.name == h.name) else {
                continue;
            };
            let digest = transaction::change_digest(&h.changes);
            if old.fingerprint != h.fingerprint {
                stale.insert(h.name.clone(), "the host changed since the plan was saved".into());
            } else if s.digests.get(&h.name) != Some(&digest) {
                stale.insert(
                    h.name.clone(),
                    "its changes are no longer the ones the plan saved".into(),
                );
            }
        }
    }

    print!(
        "{}",
        plan::text::render(&plan, plan::text::TextOptions { color, detail: false })
    );
    if !plan.has_changes() {
        return Ok(if plan.summary.hosts_unreachable > 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        });
    }
    if !args.auto_approve && !confirm()? {
        println!("Apply cancelled.");
        return Ok(Outcome::Failure);
    }

    // Every artifact is fetched and verified before any host is touched.
    let pinned = match &args.trusted_keys {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading trusted keys from {}", p.display()))?,
        ),
        None => None,
    };
    let trust = TrustPolicy::new(
        &loaded.fleet.trust.keys,
        loaded.fleet.trust.require_signatures,
        pinned.as_deref(),
    )?;
    let cache = ArtifactCache::new(store.artifact_cache_dir());
    let mut artifacts: BTreeMap<(String, String), Upload> = BTreeMap::new();
    let mut artifact_errors: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
    // The plan lists hosts in rollout order; observations follow `targets`.
    let by_name: BTreeMap<&str, (&DesiredHost, &Observation)> = targets
        .iter()
        .zip(&observations)
        .filter_map(|(d, o)| Some((d.name.as_str(), (*d, o.as_ref().ok()?))))
        .collect();
    for h in &plan.hosts {
        let Some((_, o)) = by_name.get(h.name.as_str()) else {
            continue;
        };
        for c in &h.changes {
            if let (Kind::Runtime, Action::Create | Action::Update, Some(v)) = (c.kind, c.action, &c.after)
                && !o.runtimes.get(&c.name).is_some_and(|r| r.versions.contains(v))
            {
                needed.insert((c.name.clone(), v.clone()));
            }
        }
    }
    for (rt, v) in &needed {
        let Some(version) = loaded
            .fleet
            .runtimes
            .get(rt.as_str())
            .and_then(|r| r.versions.get(v.as_str()))
        else {
            continue;
        };
        let req = ArtifactRequest {
            runtime: rt,
            version: v,
            artifact: &version.artifact,
            signature: &version.signature,
            sha256: &version.sha256,
        };
        // Fetching and verifying is blocking I/O (files, network, hashing).
        match tokio::task::block_in_place(|| cache.prepare(&req, &repo, &trust, DEFAULT_MAX_UNPACKED)) {
            Ok(p) => {
                artifacts.insert(
                    (rt.clone(), v.clone()),
                    Upload {
                        sha256: p.sha256,
                        local_path: p.path,
                    },
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                artifact_errors.insert((rt.clone(), v.clone()), e.to_string());
            }
        }
    }

    let epoch = store.next_epoch()?;
    let mut started = audit(revision.as_deref(), dirty, "apply-started");
    started.changes = vec![serde_json::json!({ "epoch": epoch, "hosts": plan.summary.hosts_changed })];
    store.append_audit(&started)?;
    for (flag, reason) in [
        ("override-windows", &args.override_windows),
        ("override-freeze", &args.override_freeze),
    ] {
        if let Some(r) = reason {
            let mut e = audit(revision.as_deref(), dirty, flag);
            e.reason = Some(r.clone());
            store.append_audit(&e)?;
        }
    }

    // Windows and freezes, checked before each wave (overrides ignore them, audited above).
    let gates: BTreeMap<String, Gate> = plan
        .environments
        .iter()
        .filter_map(|env| {
            let e = loaded.fleet.environments.get(env.name.as_str())?;
            let gate = Gate {
                windows: if args.override_windows.is_some() {
                    Vec::new()
                } else {
                    e.windows.clone()
                },
                freezes: if args.override_freeze.is_some() {
                    Vec::new()
                } else {
                    e.freezes.clone()
                },
            };
            Some((env.name.clone(), gate))
        })
        .collect();

    let mut refused: Vec<(String, String)> = Vec::new();
    let mut by_env: BTreeMap<String, Vec<HostJob>> = BTreeMap::new();
    let store_id = store.id().to_owned();
    for h in &plan.hosts {
        let (Some(wave), Some(&(d, o))) = (h.wave, by_name.get(h.name.as_str())) else {
            continue;
        };
        if let Some(why) = stale.get(&h.name) {
            refused.push((h.name.clone(), format!("stale: {why}")));
            continue;
        }
        if let Some(why) = refusal(
            d,
            o,
            loaded.fleet.name.as_str(),
            &store_id,
            epoch,
            args.take_over.is_some(),
        ) {
            refused.push((h.name.clone(), why));
            continue;
        }
        if args.take_over.is_some() && o.state.as_ref().is_some_and(|s| s.store_id != store_id) {
            let mut e = audit(revision.as_deref(), dirty, "take-over");
            e.host = Some(h.name.clone());
            e.environment = Some(h.environment.clone());
            e.reason = args.take_over.clone();
            store.append_audit(&e)?;
        }
        let blocked = h.changes.iter().find_map(|c| {
            let key = (c.name.clone(), c.after.clone()?);
            artifact_errors
                .get(&key)
                .map(|e| format!("artifact check failed: {e}"))
        });
        by_env.entry(h.environment.clone()).or_default().push(HostJob {
            desired: (*d).clone(),
            observed: o.clone(),
            changes: h.changes.clone(),
            wave,
            blocked,
        });
    }
    // The wave layout is stored when a rollout starts and kept when it resumes (DESIGN §6.2):
    // an unfinished rollout of this revision keeps its waves; hosts already converged have
    // no job any more, and hosts new to it join its last wave.
    for env in plan.environments.iter().filter(|e| !e.waves.is_empty()) {
        let stored = store.rollout(&env.name)?.filter(|r| {
            r.revision.is_some()
                && r.revision == plan.revision
                && r.halted.is_none()
                && r.waves_done < r.waves.len()
        });
        match stored {
            Some(record) => {
                for job in by_env.get_mut(&env.name).into_iter().flatten() {
                    let name = job.desired.name.as_str();
                    job.wave = record
                        .waves
                        .iter()
                        .position(|w| w.iter().any(|h| h == name))
                        .map_or(record.waves.len(), |i| i + 1);
                }
            }
            None => {
                let record = crate::store::RolloutRecord {
                    revision: plan.revision.clone(),
                    waves: env.waves.clone(),
                    waves_done: 0,
                    bake_deadline: None,
                    halted: None,
                    started_at: now,
                };
                store.save_rollout(&env.name, &record)?;
            }
        }
    }
    // Hosts that cannot take part count against their environment's failure budget.
    let mut prior_failures: BTreeMap<String, usize> = BTreeMap::new();
    for h in &plan.hosts {
        if h.error.is_some() || refused.iter().any(|(n, _)| *n == h.name) {
            *prior_failures.entry(h.environment.clone()).or_default() += 1;
        }
    }
    let order: Vec<String> = plan.environments.iter().map(|e| e.name.clone()).collect();
    let environments = order
        .into_iter()
        .filter_map(|e| by_env.remove(&e).map(|jobs| (e, jobs)))
        .collect();

    let promoter = Promoter {
        fleet: &loaded.fleet,
        desired: &loaded.desired,
        store: &store,
        plan: &plan,
        observed: &by_name,
    };
    // Environments with nothing to do are converged now: their records let later
    // environments go in this same run.
    for env in plan.environments.iter().filter(|e| e.waves.is_empty()) {
        promoter.finished(&env.name, &[], None);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let view = spawn_view(cli, rx);
    for (host, why) in &refused {
        let _ = tx.send(Event::HostSkipped {
            host: host.clone(),
            why: why.clone(),
        });
    }
    let summary = rollout::execute(
        RunSpec {
            fleet: &loaded.fleet,
            fleet_dir: repo.fleet_dir(),
            revision: revision.as_deref(),
            store_id: &store_id,
            epoch,
            now,
            artifacts: &artifacts,
            environments,
            gates,
            prior_failures,
            clock: jiff::Timestamp::now,
            records: Some(&promoter),
            parallel,
            cancel: watch_signals(),
            pool: pool.clone(),
        },
        tx,
    )
    .await;
    let _ = view.await;

    // The observation cache and the per-host audit events are written after the hosts, off
    // the rollout's critical path; the audit events with one flush to disk.
    for (d, o) in targets.iter().zip(&observations) {
        if let Ok(o) = o {
            let _ = store.save_observation(d.name.as_str(), &o.fingerprint(), now);
        }
    }
    let mut events = Vec::new();
    for r in &summary.results {
        let mut e = audit(revision.as_deref(), dirty, "host-applied");
        e.host = Some(r.host.clone());
        e.environment = Some(r.environment.clone());
        e.changes = r
            .changes
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        match &r.report {
            Ok(_) if r.reverted => {
                e.event = "rolled-back".into();
                e.error = Some("applied, then rolled back with its halted rollout".into());
            }
            Ok(rep) => {
                e.event = match rep.outcome {
                    TxnOutcome::Applied | TxnOutcome::AppliedWithErrors(_) => "host-applied",
                    TxnOutcome::RolledBack(_) => "rolled-back",
                    TxnOutcome::Broken(_) => "host-broken",
                    TxnOutcome::Stale(_) | TxnOutcome::Locked(_) => "host-skipped",
                    TxnOutcome::Unhealthy(_) => "host-unhealthy",
                }
                .into();
                if rep.outcome != TxnOutcome::Applied {
                    e.error = Some(transaction::describe_failure(rep));
                }
            }
            Err(err) => {
                e.event = "host-failed".into();
                e.error = Some(err.clone());
            }
        }
        events.push(e);
    }
    store.append_audit_all(&events)?;
    let mut finished = audit(revision.as_deref(), dirty, "apply-finished");
    finished.changes = vec![serde_json::json!({
        "applied": summary.applied(), "failed": summary.failed(), "rolled_back": summary.rolled_back(),
        "skipped": summary.skipped.len() + refused.len(), "waiting": summary.waiting.len(), "interrupted": summary.interrupted,
    })];
    store.append_audit(&finished)?;

    println!(
        "\nApply {}: {} applied, {} failed, {} rolled back, {} skipped{}.",
        if summary.interrupted {
            "interrupted"
        } else {
            "complete"
        },
        summary.applied(),
        summary.failed(),
        summary.rolled_back(),
        summary.skipped.len() + refused.len(),
        if summary.waiting.is_empty() {
            String::new()
        } else {
            format!(", {} environment(s) waiting", summary.waiting.len())
        },
    );
    for (env, why) in &summary.waiting {
        println!("  {env} waits: {why}");
    }
    for (host, why) in &summary.held {
        println!("  {host} waits: {why}");
    }
    for (host, why) in refused.iter().chain(&summary.skipped) {
        println!("  {host} skipped: {why}");
    }
    if summary.interrupted {
        println!(
            "  Interrupted: hosts not started are left as they were; run `flotilla apply` again to continue."
        );
    }
    let failed =
        summary.failed() > 0 || !refused.is_empty() || !summary.skipped.is_empty() || summary.interrupted;
    *wake = summary
        .waiting
        .iter()
        .filter_map(|(env, _)| {
            plan.environments
                .iter()
                .find(|e| e.name == *env)?
                .window
                .next_open
        })
        .min();
    Ok(if failed || plan.summary.hosts_unreachable > 0 {
        Outcome::Failure
    } else if !summary.waiting.is_empty() || !summary.held.is_empty() {
        Outcome::Waiting
    } else {
        Outcome::Success
    })
}

/// Hosts left `pending` by a killed transaction are rolled back from their journal to where
/// they were (DESIGN §6.1). Returns whether any host was touched.
async fn recover_interrupted(
    repo: &FleetRepo,
    targets: &[&DesiredHost],
    observations: &[Result<Observation, crate::observe::ObserveError>],
    pool: &Pool,
) -> bool {
    let mut touched = false;
    for (d, o) in targets.iter().zip(observations) {
        let Some(txn) = o
            .as_ref()
            .ok()
            .and_then(|o| o.state.as_ref())
            .and_then(transaction::pending_txn)
        else {
            continue;
        };
        touched = true;
        let target = transport::Target::for_host(d, repo.fleet_dir());
        eprintln!(
            "{}: restoring the state from before interrupted transaction {txn}",
            d.name
        );
        let result = async {
            let mut session = pool.take(&target).await.map_err(|e| e.to_string())?;
            let r = transaction::recover(session.as_mut(), d, &txn).await;
            pool.put(&target.host, session).await;
            r.map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(r) if !r.outcome.failed() => eprintln!("{}: restored", d.name),
            Ok(r) => eprintln!(
                "{}: recovery failed: {}",
                d.name,
                transaction::describe_failure(&r)
            ),
            Err(e) => eprintln!("{}: recovery failed: {e}", d.name),
        }
    }
    touched
}

pub fn history(cli: &Cli, args: &HistoryArgs) -> anyhow::Result<Outcome> {
    let name = match &cli.global.state_dir {
        Some(_) => String::new(),
        None => {
            let repo = FleetRepo::open(&args.fleet_dir, None)?;
            let files = repo.manifest_files()?;

            files
                .iter()
                .find(|f| f.path == "flotilla.toml")
                .and_then(|f| toml::from_str::<crate::manifest::raw::RawFleetFile>(&f.text).ok())
                .map(|f| f.fleet.name.get().clone())
                .context("cannot read the fleet name from flotilla.toml (run `flotilla validate`)")?
        }
    };
    let dir = store_dir(cli, &name)?;
    if !dir.exists() {
        bail!(
            "no store at {}: nothing has been applied with it yet",
            dir.display()
        );
    }
    let store = DirStore::open(&dir)?;
    let events = store.audit(&AuditFilter {
        host: args.host.clone(),
        env: args.env.clone(),
        limit: args.limit,
    })?;
    print!("{}", crate::store::render_history(&events, args.json));
    Ok(Outcome::Success)
}

/// The store's side of one apply: promotion gates read the records fresh, so an environment
/// that converged earlier in this run already counts; finished rollouts are recorded.
struct Promoter<'a> {
    fleet: &'a crate::manifest::Fleet,
    desired: &'a [DesiredHost],
    store: &'a DirStore,
    plan: &'a plan::Plan,
    observed: &'a BTreeMap<&'a str, (&'a DesiredHost, &'a Observation)>,
}

impl Records for Promoter<'_> {
    fn wave_done(&self, env: &str, waves_done: usize, bake_deadline: Option<jiff::Timestamp>) {
        let Ok(Some(mut record)) = self.store.rollout(env) else {
            return;
        };
        if record.revision != self.plan.revision {
            return;
        }
        record.waves_done = record.waves_done.max(waves_done);
        record.bake_deadline = bake_deadline;
        if let Err(e) = self.store.save_rollout(env, &record) {
            eprintln!("warning: cannot record the progress of the rollout in {env}: {e}");
        }
    }

    fn unfinished_bake(&self, env: &str) -> Option<jiff::Timestamp> {
        let record = self.store.rollout(env).ok().flatten()?;
        (record.revision == self.plan.revision && record.halted.is_none())
            .then_some(record.bake_deadline)
            .flatten()
    }

    fn promotion_waits(&self, env: &str, job: &HostJob) -> Option<String> {
        let records = self.store.promotions().unwrap_or_default();
        // Versions active anywhere in the environment before this run are not gated.
        let active: BTreeSet<(String, String)> = self
            .observed
            .values()
            .filter(|(d, _)| d.environment.as_str() == env)
            .flat_map(|(_, o)| {
                o.runtimes
                    .iter()
                    .filter_map(|(rt, r)| Some((rt.clone(), r.current.clone()?)))
            })
            .collect();
        let now = jiff::Timestamp::now();
        plan::promotion::waits(
            self.fleet,
            self.desired,
            env,
            &job.changes,
            &active,
            &records,
            now,
        )
    }

    fn finished(&self, env: &str, results: &[HostResult], halted: Option<&str>) {
        // The rollout's outcome, for `flotilla status` (and `watch`, which does not retry a
        // halted rollout until the manifests change or a person applies).
        if let Some(p) = self
            .plan
            .environments
            .iter()
            .find(|e| e.name == env)
            .filter(|e| !e.waves.is_empty())
        {
            let stored = self
                .store
                .rollout(env)
                .ok()
                .flatten()
                .filter(|r| r.revision == self.plan.revision);
            let waves = stored
                .as_ref()
                .map_or_else(|| p.waves.clone(), |r| r.waves.clone());
            let started_at = stored.as_ref().map_or(self.plan.created_at, |r| r.started_at);
            // A host is done when it applied now, or had nothing left to do.
            let done = |h: &String| {
                results.iter().any(|r| r.host == *h && r.applied())
                    || self
                        .plan
                        .hosts
                        .iter()
                        .any(|p| p.name == *h && p.changes.is_empty() && p.error.is_none())
            };
            let record = crate::store::RolloutRecord {
                revision: self.plan.revision.clone(),
                waves_done: waves.iter().take_while(|w| w.iter().all(done)).count(),
                waves,
                bake_deadline: None,
                halted: halted.map(str::to_owned),
                started_at,
            };
            if let Err(e) = self.store.save_rollout(env, &record) {
                eprintln!("warning: cannot record the rollout of {env}: {e}");
            }
        }
        let hosts: Vec<&DesiredHost> = self
            .desired
            .iter()
            .filter(|h| h.environment.as_str() == env)
            .collect();
        // Only a run that saw every host of the environment can say it converged.
        if hosts.is_empty() || hosts.iter().any(|h| !self.observed.contains_key(h.name.as_str())) {
            return;
        }
        let mut converged: BTreeMap<(String, String), bool> = BTreeMap::new();
        for h in hosts {
            let planned = self.plan.hosts.iter().find(|p| p.name == h.name.as_str());
            for (rt, pin) in &h.runtimes {
                let crate::manifest::model::Pin::Version(v) = &pin.value else {
                    continue;
                };
                let pending = planned.is_some_and(|p| {
                    p.changes
                        .iter()
                        .any(|c| c.kind == Kind::Runtime && c.name == rt.as_str())
                });
                let ok = !pending || results.iter().any(|r| r.host == h.name.as_str() && r.applied());
                *converged.entry((rt.to_string(), v.to_string())).or_insert(true) &= ok;
            }
        }
        let records = self.store.promotions().unwrap_or_default();
        for ((runtime, version), ok) in converged {
            let known = records
                .iter()
                .any(|r| r.environment == env && r.runtime == runtime && r.version == version);
            if ok && !known {
                let record = crate::store::PromotionRecord {
                    environment: env.to_owned(),
                    runtime,
                    version,
                    at: jiff::Timestamp::now(),
                };
                if let Err(e) = self.store.record_promotion(&record) {
                    eprintln!("warning: cannot record the promotion of {env}: {e}");
                }
            }
        }
    }
}
