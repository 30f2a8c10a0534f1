//! Turning one host's planned changes into its transaction: the op lines, file contents,
//! command files and the `pending` and final `state.json` that `txn.sh` runs from.

use super::*;

/// The probe reports a symlink at a file's path as `file-other` "symlink" (probe.sh).
fn observed_link(o: Option<&ObservedFile>) -> bool {
    matches!(o, Some(ObservedFile::Other { what }) if what == "symlink")
}

fn field(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Builds a host's transaction from its planned changes: the plan decides, this only encodes.
pub fn build(
    desired: &DesiredHost,
    observed: &Observation,
    changes: &[Change],
    cx: &Context<'_>,
) -> Transaction {
    let id = format!("{}-{:016x}", cx.epoch, rand::random::<u64>());
    let mut ops = String::new();
    let mut bundle: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
    let mut modes = BTreeMap::new();
    let mut uploads = Vec::new();
    let mut line = |fields: &[&str]| {
        ops.push_str(&fields.join("\t"));
        ops.push('\n');
    };
    let state = observed.state.as_ref();

    // Preconditions: the host is exactly what the plan was made against.
    line(&["pre-state", observed.state_sha256.as_deref().unwrap_or("-")]);
    for c in changes {
        match c.kind {
            Kind::Runtime => line(&["pre-link", &c.name, c.before.as_deref().unwrap_or("-")]),
            Kind::File => {
                // A symlink the plan saw there must still be one (it is taken over as a link).
                let link = HostPath::new(&c.name).is_ok_and(|p| observed_link(observed.files.get(&p)));
                // The real sha256 observed (a sensitive file's `before` is a keyed digest).
                line(&[
                    "pre-file",
                    &c.name,
                    observed_sha256(observed, &c.name),
                    if link { "link" } else { "-" },
                ])
            }
        }
    }

    let mut new_state = state.cloned().unwrap_or_else(|| HostState {
        format_version: 1,
        fleet: cx.fleet.name.to_string(),
        host: desired.name.to_string(),
        revision: None,
        applied_at: String::new(),
        store_id: cx.store_id.to_owned(),
        epoch: cx.epoch,
        runtimes: BTreeMap::new(),
        files: BTreeMap::new(),
        pending: None,
    });
    let mut pending = new_state.clone();
    pending.pending = Some(serde_json::json!({ "txn": id, "store_id": cx.store_id, "epoch": cx.epoch }));

    // Installs, then files, then links (DESIGN §6.1).
    let upserts: Vec<&Change> = changes.iter().filter(|c| c.action != Action::Delete).collect();
    for c in upserts.iter().filter(|c| c.kind == Kind::Runtime) {
        let Some(version) = c.after.as_deref() else {
            continue;
        };
        let installed = observed
            .runtimes
            .get(&c.name)
            .is_some_and(|r| r.versions.contains(version));
        let key = (c.name.clone(), version.to_owned());
        // The verified upload's digest; for a version already on the host (nothing uploaded)
        // the manifest's, which is what was checked when it was installed.
        let sha = cx
            .artifacts
            .get(&key)
            .map(|u| u.sha256.clone())
            .or_else(|| {
                let v = cx.fleet.runtimes.get(c.name.as_str())?.versions.get(version)?;
                Some(v.sha256.to_ascii_lowercase())
            })
            .unwrap_or_default();
        if !installed {
            if let Some(u) = cx.artifacts.get(&key) {
                uploads.push(u.clone());
            }
            line(&["install", &c.name, version, field(&sha)]);
        }
        new_state.runtimes.insert(
            c.name.clone(),
            RuntimeState {
                active: version.to_owned(),
                previous: c.before.clone(),
                sha256: sha,
            },
        );
    }
    // Each distinct command once, with the files that trigger it (the first names it in steps
    // and -v output).
    let mut on_change: Vec<(String, Vec<&str>)> = Vec::new();
    let mut sensitive_on_change = BTreeSet::new();
    for (n, c) in upserts.iter().filter(|c| c.kind == Kind::File).enumerate() {
        let Ok(path) = HostPath::new(&c.name) else {
            continue;
        };
        let Some(f) = desired.files.get(&path).map(|f| &f.value) else {
            continue;
        };
        let managed = state.and_then(|s| s.files.get(&c.name));
        // A symlink is taken over too: its backup is the link itself, restored as a link.
        let exists = matches!(observed.files.get(&path), Some(ObservedFile::Regular { .. }))
            || observed_link(observed.files.get(&path));
        // A file that existed before Flotilla took it over keeps its original in backup/.
        let took_over = managed.map_or(exists, |m| m.took_over);
        let backup = if managed.is_none() && exists {
            sha256_hex(c.name.as_bytes())
        } else {
            "-".into()
        };
        bundle.insert(format!("files/{n}"), f.content.clone());
        modes.insert(format!("files/{n}"), f.mode & 0o7777);
        let mode = format!("{:04o}", f.mode);
        // Without `owner`, a file belongs to the connecting user (DESIGN §2.2); through sudo it
        // would otherwise be root's.
        let owner = match (&f.owner, desired.settings.become_.value) {
            (Some(o), _) => o.clone(),
            (None, crate::manifest::model::Become::Sudo) => desired.settings.user.value.clone(),
            (None, crate::manifest::model::Become::None) => "-".into(),
        };
        line(&[
            "file",
            &n.to_string(),
            &c.name,
            &mode,
            &owner,
            f.group.as_deref().unwrap_or("-"),
            &backup,
            // The journal's copy of what a sensitive file replaces is root's only.
            if f.sensitive { "sensitive" } else { "-" },
        ]);
        if let Some(cmd) = &f.on_change {
            let k = match on_change.iter().position(|x| x.0 == *cmd) {
                Some(k) => k,
                None => {
                    on_change.push((cmd.clone(), Vec::new()));
                    on_change.len() - 1
                }
            };
            on_change[k].1.push(&c.name);
            bundle.insert(format!("onchange-for/{n}"), Arc::from(k.to_string().into_bytes()));
            if f.sensitive {
                sensitive_on_change.insert(k);
            }
        }
        new_state.files.insert(
            c.name.clone(),
            FileState {
                sha256: f.sha256.clone(),
                mode: f.mode,
                owner: f.owner.clone(),
                group: f.group.clone(),
                took_over,
            },
        );
    }
    for c in upserts.iter().filter(|c| c.kind == Kind::Runtime) {
        if let Some(v) = c.after.as_deref() {
            line(&["link", &c.name, v, c.before.as_deref().unwrap_or("-")]);
        }
    }
    for (k, (cmd, paths)) in on_change.iter().enumerate() {
        bundle.insert(format!("cmds/onchange-{k}"), Arc::from(cmd.as_bytes()));
        if sensitive_on_change.contains(&k) {
            // Its output may hold the secret: txn.sh keeps it out of the log (whose tail
            // reaches the terminal and the audit log).
            bundle.insert(format!("cmds/onchange-{k}.sensitive"), Arc::from(&b""[..]));
        }
        // Validated paths: no tab or newline.
        let names = match paths.as_slice() {
            [one] => (*one).to_owned(),
            [first, more @ ..] => format!("{first} (and {} more)", more.len()),
            [] => "a changed file".to_owned(),
        };
        line(&["onchange", &k.to_string(), &names]);
    }
    for c in upserts.iter().filter(|c| c.kind == Kind::Runtime) {
        let Some(v) = c.after.as_deref() else { continue };
        let Some(rt) = cx.fleet.runtimes.get(c.name.as_str()) else {
            continue;
        };
        if let Some(hook) = &rt.hooks.activate {
            bundle.insert(format!("cmds/activate-{}", c.name), Arc::from(hook.as_bytes()));
            line(&["activate", &c.name, v, c.before.as_deref().unwrap_or("")]);
        }
    }
    for c in upserts.iter().filter(|c| c.kind == Kind::Runtime) {
        let Some(v) = c.after.as_deref() else { continue };
        let Some(h) = cx
            .fleet
            .runtimes
            .get(c.name.as_str())
            .and_then(|rt| rt.health.as_ref())
        else {
            continue;
        };
        bundle.insert(format!("cmds/health-{}", c.name), Arc::from(h.command.as_bytes()));
        let secs = |d: std::time::Duration| d.as_secs().max(1).to_string();
        line(&[
            "health",
            &c.name,
            v,
            &secs(h.timeout),
            &h.retries.to_string(),
            &secs(h.interval),
            // FLOTILLA_PREVIOUS_VERSION (DESIGN §2.4); host text, already stripped of controls.
            field(c.before.as_deref().unwrap_or_default()),
        ]);
    }
    if let Some(cmd) = cx
        .fleet
        .environments
        .get(&desired.environment)
        .and_then(|e| e.rollout.health_command.as_ref())
    {
        bundle.insert("cmds/health-env".into(), Arc::from(cmd.as_bytes()));
        line(&["health-env"]);
    }
    line(&["commit"]);

    // After the commit: deletions (remove hooks first), then pruning.
    for c in changes.iter().filter(|c| c.action == Action::Delete) {
        match c.kind {
            Kind::Runtime => {
                if let Some(hook) = cx
                    .fleet
                    .runtimes
                    .get(c.name.as_str())
                    .and_then(|rt| rt.hooks.remove.as_ref())
                {
                    bundle.insert(format!("cmds/remove-{}", c.name), Arc::from(hook.as_bytes()));
                }
                // The version being removed, for the remove hook's FLOTILLA_VERSION.
                line(&[
                    "remove-runtime",
                    &c.name,
                    field(c.before.as_deref().unwrap_or_default()),
                ]);
                new_state.runtimes.remove(&c.name);
            }
            Kind::File => {
                let took_over = state
                    .and_then(|s| s.files.get(&c.name))
                    .is_some_and(|f| f.took_over);
                let backup = if took_over {
                    sha256_hex(c.name.as_bytes())
                } else {
                    "-".into()
                };
                line(&["remove-file", &c.name, &backup]);
                new_state.files.remove(&c.name);
            }
        }
    }
    let keep = desired.settings.keep_versions.value.max(1);
    for c in upserts.iter().filter(|c| c.kind == Kind::Runtime) {
        if let Some(v) = c.after.as_deref() {
            // The previous version stays, whatever keep_versions says, while the rollout may
            // still roll this host back to it; `finish` prunes it once the rollout completed.
            let previous = c.before.as_deref().filter(|b| *b != v).unwrap_or("-");
            line(&["prune", &c.name, v, previous, &keep.to_string()]);
        }
    }
    new_state.fleet = cx.fleet.name.to_string();
    new_state.host = desired.name.to_string();
    new_state.revision = cx.revision.map(str::to_owned);
    new_state.applied_at = cx.now.to_string();
    new_state.store_id = cx.store_id.to_owned();
    new_state.epoch = cx.epoch;
    new_state.pending = None;
    let json = |s: &HostState| Arc::from(serde_json::to_vec_pretty(s).unwrap_or_default());
    // Each state twice: state.X.json stays for the fences, state.X.put is renamed into place
    // (no copy on the host).
    let (pending, fin): (Arc<[u8]>, Arc<[u8]>) = (json(&pending), json(&new_state));
    bundle.insert("state.pending.json".into(), pending.clone());
    bundle.insert("state.pending.put".into(), pending);
    bundle.insert("state.final.json".into(), fin.clone());
    bundle.insert("state.final.put".into(), fin);
    // The state.json this plan was made against, byte for byte (pre-state checks its digest
    // on the host): the rollback's copy of it.
    if let (Some(raw), Some(_)) = (&observed.state_raw, &observed.state_sha256) {
        bundle.insert("state.before".into(), raw.clone());
    }
    bundle.insert("txn.sh".into(), Arc::from(TXN_SH.as_bytes()));
    bundle.insert("ops".into(), Arc::from(ops.as_bytes()));
    Transaction {
        id,
        ops,
        bundle,
        modes,
        uploads,
        detail: cx.detail,
        large_pipes: observed.large_pipes,
    }
}

/// The sha256 of the regular file observed at `path`, or `-` (missing, or not a file): what
/// a file change's `before` holds before keying.
fn observed_sha256<'o>(observed: &'o Observation, path: &str) -> &'o str {
    match HostPath::new(path).ok().and_then(|p| observed.files.get(&p)) {
        Some(ObservedFile::Regular { sha256, .. }) => sha256,
        _ => "-",
    }
}
