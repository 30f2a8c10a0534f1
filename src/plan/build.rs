//! Computing a plan: desired × observed → changes per host, waves per environment, window
//! state at a given instant. Pure: the observations and the time are inputs.

use std::collections::BTreeMap;

use similar::TextDiff;

use super::*;
use crate::manifest::model::{Fleet, Pin};
use crate::observe::{Observation, ObservedFile};
use crate::resolve::DesiredHost;
use crate::schedule::waves::{WaveHost, WaveTarget, layout};
use crate::schedule::window::{availability, describe};

/// A host's clock may be this far off the controller's before the plan warns.
const MAX_SKEW_SECS: i64 = 120;

/// One host to plan: its desired state and what observing it gave.
pub struct HostInput<'a> {
    /// What the manifests want on the host.
    pub desired: &'a DesiredHost,
    /// What the probe found, or why the host could not be observed.
    pub observed: Result<&'a Observation, String>,
    /// Why `apply` will refuse this host (its `state.json` names another fleet, host or store,
    /// or a higher epoch), as the caller found out; `None` when it will not. A refused host is
    /// planned with no changes and in no wave (DESIGN §5). Ignored when the host could not be
    /// observed: that is reported as the error instead.
    pub refused: Option<String>,
    /// `apply --take-over`: a `state.json` that cannot be read does not refuse the host, which
    /// is then planned as fresh. Without it, [`build()`] refuses such a host itself.
    pub take_over: bool,
}

impl HostInput<'_> {
    /// Why apply will refuse this observed host: the caller's reason, else an unreadable
    /// `state.json` (unless taking over). Control characters are escaped: the reason can carry
    /// text from the host.
    fn refusal(&self, o: &Observation) -> Option<String> {
        if let Some(why) = &self.refused {
            return Some(escape_controls(why));
        }
        match &o.state_error {
            Some(e) if !self.take_over => Some(format!(
                "state.json cannot be read ({}); run `flotilla apply --take-over REASON` to start this host over",
                escape_controls(e)
            )),
            _ => None,
        }
    }
}

pub struct PlanInput<'a> {
    pub fleet: &'a Fleet,
    pub revision: Option<String>,
    pub hosts: Vec<HostInput<'a>>,
    /// When windows and freezes are evaluated (`--at`, or now).
    pub at: jiff::Timestamp,
    /// When the hosts were observed, for clock-skew warnings.
    pub observed_at: jiff::Timestamp,
    /// Every host's desired state (not only the targeted ones): promotion asks which
    /// environments use a runtime at all.
    pub all_desired: &'a [DesiredHost],
    /// The store's promotion records (empty without a store).
    pub promotions: &'a [super::promotion::PromotionRecord],
    /// Halted rollouts: environment name → halt. The caller passes only halts of the
    /// revision being planned (a revision that changes an environment starts a new rollout).
    pub halts: &'a BTreeMap<String, Halt>,
}

pub fn build(input: &PlanInput<'_>) -> Plan {
    let mut hosts: Vec<HostPlan> = input
        .hosts
        .iter()
        .map(
            |h| match (&h.observed, h.observed.as_ref().ok().and_then(|o| h.refusal(o))) {
                (Ok(o), Some(why)) => HostPlan {
                    name: h.desired.name.to_string(),
                    environment: h.desired.environment.to_string(),
                    wave: None,
                    fingerprint: Some(o.fingerprint()),
                    error: None,
                    refused: Some(why),
                    interrupted: false,
                    changes: Vec::new(),
                    warnings: Vec::new(),
                    busy: None,
                },
                (Ok(o), None) => {
                    let mut warnings = Vec::new();
                    if o.interrupted() {
                        warnings.push(
                            "a transaction was interrupted here: its pending state is restored first"
                                .to_owned(),
                        );
                    }
                    if let Some(e) = &o.state_error {
                        warnings.push(sanitize(e));
                    }
                    if let Some(clock) = o.clock {
                        // The clock is the host's word: any i64, so no arithmetic may overflow.
                        let skew = clock.saturating_sub(input.observed_at.as_second());
                        if skew.saturating_abs() > MAX_SKEW_SECS {
                            let d = crate::schedule::window::format_countdown(
                                jiff::SignedDuration::from_secs(skew.saturating_abs()),
                            );
                            let dir = if skew > 0 { "ahead of" } else { "behind" };
                            warnings.push(format!(
                                "clock is {} {dir} the controller's",
                                d.trim_start_matches("in ")
                            ));
                        }
                    }
                    if !o.missing_tools.is_empty() {
                        let tools: Vec<String> = o.missing_tools.iter().map(|t| sanitize(t)).collect();
                        warnings.push(format!("missing tools Flotilla needs: {}", tools.join(", ")));
                    }
                    HostPlan {
                        name: h.desired.name.to_string(),
                        environment: h.desired.environment.to_string(),
                        wave: None,
                        fingerprint: Some(o.fingerprint()),
                        error: None,
                        refused: None,
                        interrupted: o.interrupted(),
                        changes: host_changes(h.desired, o),
                        warnings,
                        busy: None,
                    }
                }
                (Err(e), _) => HostPlan {
                    name: h.desired.name.to_string(),
                    environment: h.desired.environment.to_string(),
                    wave: None,
                    fingerprint: None,
                    error: Some(sanitize(e)),
                    refused: None,
                    interrupted: false,
                    changes: Vec::new(),
                    warnings: Vec::new(),
                    busy: None,
                },
            },
        )
        .collect();

    let mut by_env: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in input.hosts.iter().enumerate() {
        by_env.entry(h.desired.environment.as_str()).or_default().push(i);
    }

    let mut environments = Vec::new();
    for (env_name, idxs) in &by_env {
        let Some(env) = input.fleet.environments.get(*env_name) else {
            continue;
        };
        let changing: Vec<WaveHost<'_>> = idxs
            .iter()
            .filter(|&&i| !hosts[i].changes.is_empty())
            .map(|&i| WaveHost {
                name: input.hosts[i].desired.name.as_str(),
                canary: input.hosts[i].desired.canary,
            })
            .collect();
        let waves: Vec<Vec<String>> = layout(&changing, &env.rollout.waves)
            .into_iter()
            .map(|w| w.into_iter().map(str::to_owned).collect())
            .collect();
        let wave_of: BTreeMap<&str, usize> = waves
            .iter()
            .enumerate()
            .flat_map(|(n, w)| w.iter().map(move |h| (h.as_str(), n + 1)))
            .collect();
        for &i in idxs {
            hosts[i].wave = wave_of.get(hosts[i].name.as_str()).copied();
        }
        let a = availability(&env.windows, &env.freezes, input.at);
        let has_changes = !waves.is_empty();
        let window_text = describe(&env.windows, &env.freezes, &a, input.at);
        let mut targets: Vec<String> = env
            .rollout
            .waves
            .iter()
            .map(|w| match w {
                WaveTarget::Count(n) => n.to_string(),
                WaveTarget::Percent(p) => format!("{p}%"),
            })
            .collect();
        if targets.last().map(String::as_str) != Some("100%") {
            targets.push("100%".into());
        }
        // Promotion gates, as apply would see them now (DESIGN §6.4).
        let active: std::collections::BTreeSet<(String, String)> = idxs
            .iter()
            .filter(|&&i| hosts[i].refused.is_none())
            .filter_map(|&i| input.hosts[i].observed.as_ref().ok())
            .flat_map(|o| {
                o.runtimes
                    .iter()
                    .filter_map(|(rt, r)| Some((rt.clone(), r.current.clone()?)))
            })
            .collect();
        // Every distinct hold, in host order: the text and JSON show them all.
        let mut holds: Vec<String> = Vec::new();
        for &i in idxs {
            if let Some(why) = super::promotion::waits(
                input.fleet,
                input.all_desired,
                env_name,
                &hosts[i].changes,
                &active,
                input.promotions,
                input.at,
            ) && !holds.contains(&why)
            {
                holds.push(why);
            }
        }
        let gated = holds.first().cloned();
        let promotion = match &gated {
            Some(_) => None,
            None => input
                .fleet
                .promotion
                .iter()
                .position(|e| e.as_str() == *env_name)
                .filter(|&p| p > 0)
                .map(|p| format!("promotes after {}", input.fleet.promotion[p - 1])),
        };
        let halted = input.halts.get(*env_name).map(|h| Halt {
            wave: h.wave,
            reason: escape_controls(&h.reason),
            at: h.at,
        });
        let waiting = match &halted {
            Some(h) if has_changes => Some(format!(
                "halted at wave {}: {}; run `flotilla apply --retry REASON` to start it again",
                h.wave, h.reason
            )),
            _ if has_changes && !a.open => Some(window_text.clone()),
            _ => gated.clone(),
        };
        environments.push(EnvironmentPlan {
            name: (*env_name).to_owned(),
            window: WindowState {
                open: a.window_open,
                closes_at: a.closes_at,
                next_open: if a.open { None } else { a.next_open },
            },
            frozen: a.freeze.is_some(),
            halted,
            waiting,
            promotion_holds: holds,
            overridden: None,
            paused: None,
            waves,
            view: EnvironmentView {
                window: window_text,
                wave_targets: targets.join(" → "),
                promotion,
            },
        });
    }
    environments.sort_by(|a, b| env_order(input.fleet, &a.name).cmp(&env_order(input.fleet, &b.name)));

    let mut summary = Summary {
        hosts_total: hosts.len(),
        ..Summary::default()
    };
    for h in &hosts {
        if h.error.is_some() {
            summary.hosts_unreachable += 1;
            continue;
        }
        if h.refused.is_some() {
            continue;
        }
        if !h.changes.is_empty() || h.interrupted {
            summary.hosts_changed += 1;
        }
        // Restoring an interrupted transaction's `pending` state is this host's first step
        // (DESIGN §6.1), so the plan is never "No changes" for it (§5): one change each.
        if h.interrupted {
            summary.change += 1;
        }
        for c in &h.changes {
            match c.action {
                Action::Create => summary.add += 1,
                Action::Update => summary.change += 1,
                Action::Delete => summary.destroy += 1,
            }
        }
    }
    hosts.sort_by(|a, b| {
        let key = |h: &HostPlan| (h.wave.is_none(), h.wave);
        env_order(input.fleet, &a.environment)
            .cmp(&env_order(input.fleet, &b.environment))
            .then_with(|| key(a).cmp(&key(b)))
            .then_with(|| a.name.cmp(&b.name))
    });
    Plan {
        format_version: FORMAT_VERSION.to_owned(),
        fleet: input.fleet.name.to_string(),
        revision: input.revision.clone(),
        created_at: input.observed_at,
        summary,
        environments,
        hosts,
        no_longer_managed: Vec::new(),
    }
}

/// Environments in promotion order, the others after them by name (DESIGN §6.4).
fn env_order<'a>(fleet: &Fleet, env: &'a str) -> (usize, &'a str) {
    let pos = fleet
        .promotion
        .iter()
        .position(|e| e.as_str() == env)
        .unwrap_or(usize::MAX);
    (pos, env)
}

fn host_changes(d: &DesiredHost, o: &Observation) -> Vec<Change> {
    let mut out = Vec::new();
    let state = o.state.as_ref();
    let managed_rt = |name: &str| state.and_then(|s| s.runtimes.get(name));

    // Runtimes.
    let mut seen = std::collections::BTreeSet::new();
    if !d.decommission {
        for (name, pin) in &d.runtimes {
            seen.insert(name.as_str());
            let obs = o.runtimes.get(name.as_str());
            let current = obs.and_then(|r| r.current.clone());
            let recorded = managed_rt(name.as_str()).map(|r| r.active.clone());
            match &pin.value {
                Pin::Version(v) => {
                    let installed = obs.is_some_and(|r| r.versions.contains(v.as_str()));
                    if current.as_deref() == Some(v.as_str()) && installed {
                        continue;
                    }
                    let drift = recorded.is_some() && recorded != current;
                    let action = if current.is_none() {
                        Action::Create
                    } else {
                        Action::Update
                    };
                    out.push(Change {
                        action,
                        kind: Kind::Runtime,
                        name: name.to_string(),
                        before: current.map(|c| sanitize(&c)),
                        after: Some(v.to_string()),
                        diff: None,
                        drift,
                        notes: Vec::new(),
                        template: None,
                    });
                }
                Pin::Remove => {
                    if let (Some(rec), Some(obs)) = (managed_rt(name.as_str()), obs) {
                        out.push(delete_runtime(
                            name.as_str(),
                            obs.current.clone(),
                            Some(&rec.active),
                        ));
                    }
                }
            }
        }
    }
    if let Some(st) = state {
        for (name, rec) in &st.runtimes {
            if seen.contains(name.as_str()) {
                continue;
            }
            if let Some(obs) = o.runtimes.get(name) {
                out.push(delete_runtime(name, obs.current.clone(), Some(&rec.active)));
            }
        }
    }

    // Files.
    let mut seen_files = std::collections::BTreeSet::new();
    if !d.decommission {
        for (path, f) in &d.files {
            seen_files.insert(path.as_str());
            let f = &f.value;
            let recorded = state.and_then(|s| s.files.get(path.as_str()));
            let observed = o.files.get(path).unwrap_or(&ObservedFile::Missing);
            let change = |action, before: Option<String>, drift, notes, diff| Change {
                action,
                kind: Kind::File,
                name: path.to_string(),
                before,
                after: Some(f.sha256.clone()),
                diff,
                drift,
                notes,
                template: f.template.clone(),
            };
            let new_text = (!f.sensitive).then(|| String::from_utf8_lossy(&f.content).into_owned());
            match observed {
                ObservedFile::Missing => {
                    let diff = new_text.as_deref().map(|n| unified("", n));
                    let mut notes = Vec::new();
                    if recorded.is_some() {
                        notes.push("deleted outside Flotilla".to_owned());
                    }
                    if f.sensitive {
                        notes.push("sensitive: content hidden".to_owned());
                    }
                    out.push(change(Action::Create, None, recorded.is_some(), notes, diff));
                }
                ObservedFile::Other { what } => {
                    out.push(change(
                        Action::Update,
                        None,
                        recorded.is_some(),
                        vec![format!("replaces a {what}")],
                        None,
                    ));
                }
                ObservedFile::Regular {
                    sha256,
                    mode,
                    owner,
                    group,
                    size,
                    content,
                } => {
                    let mut notes = Vec::new();
                    let content_differs = *sha256 != f.sha256;
                    if *mode != Some(f.mode) {
                        notes.push(format!(
                            "mode {} -> {:04o}",
                            mode.map_or("?".into(), |m| format!("{m:04o}")),
                            f.mode
                        ));
                    }
                    if let Some(want) = &f.owner
                        && owner.as_ref() != Some(want)
                    {
                        notes.push(format!("owner {} -> {want}", owner.as_deref().unwrap_or("?")));
                    }
                    if let Some(want) = &f.group
                        && group.as_ref() != Some(want)
                    {
                        notes.push(format!("group {} -> {want}", group.as_deref().unwrap_or("?")));
                    }
                    match recorded {
                        None => {
                            notes.insert(0, "take over existing file".to_owned());
                            if content_differs {
                                notes.push(format!("content differs ({size} bytes now)"));
                            }
                            out.push(change(Action::Update, Some(sha256.clone()), false, notes, None));
                        }
                        Some(rec) => {
                            if !content_differs && notes.is_empty() {
                                continue;
                            }
                            let drift = rec.sha256 != *sha256 || Some(rec.mode) != *mode;
                            let mut notes = notes;
                            if content_differs && f.sensitive {
                                notes.push("sensitive: content hidden".to_owned());
                            }
                            // A state.json this store did not write may "manage" a file it
                            // never wrote (a forged one committed by a pull request): its
                            // content is not shown, and the plan says why.
                            let withheld = o.content_withheld.as_ref();
                            if content_differs
                                && !f.sensitive
                                && let Some(why) = withheld
                            {
                                notes.push(why.clone());
                            }
                            let diff = match (content_differs, &new_text, content) {
                                (true, Some(new), Some(old)) if withheld.is_none() => {
                                    Some(unified(&sanitize(&String::from_utf8_lossy(old)), new))
                                }
                                _ => None,
                            };
                            out.push(change(Action::Update, Some(sha256.clone()), drift, notes, diff));
                        }
                    }
                }
            }
        }
    }
    if let Some(st) = state {
        for (path, rec) in &st.files {
            if seen_files.contains(path.as_str()) {
                continue;
            }
            let Ok(hp) = crate::manifest::model::HostPath::new(path) else {
                continue;
            };
            if let Some(ObservedFile::Regular { sha256, .. }) = o.files.get(&hp) {
                let notes = if rec.took_over {
                    vec!["restores the original".to_owned()]
                } else {
                    Vec::new()
                };
                out.push(Change {
                    action: Action::Delete,
                    kind: Kind::File,
                    name: path.clone(),
                    before: Some(sha256.clone()),
                    after: None,
                    diff: None,
                    drift: rec.sha256 != *sha256,
                    notes,
                    template: None,
                });
            }
        }
    }
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    out
}

fn delete_runtime(name: &str, current: Option<String>, recorded: Option<&String>) -> Change {
    Change {
        action: Action::Delete,
        kind: Kind::Runtime,
        name: name.to_owned(),
        drift: recorded.is_some() && recorded != current.as_ref(),
        before: current.map(|c| sanitize(&c)),
        after: None,
        diff: None,
        notes: Vec::new(),
        template: None,
    }
}

/// Hunks only (no file headers), as the plan shows them under the file's line. Both sides
/// are stripped of control characters: the old side came from a host, and the new side from
/// the manifests of a revision that may be an unmerged pull request (an `ESC[2K\r` in
/// `content` would hide a line on a reviewer's terminal).
fn unified(old: &str, new: &str) -> String {
    let (old, new) = (sanitize(old), sanitize(new));
    let diff = TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        out.push_str(&hunk.to_string());
    }
    if !out.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    out
}
