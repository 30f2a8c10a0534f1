//! `flotilla watch`: arguments in, the store locked for the process's life, the loop
//! (`flotilla::watch`) run with its views: the plan and one line per note as text, or one
//! JSON object per line under `--log-format json`. The endpoints run beside it.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;

use super::Outcome;
use super::apply::{actor, named_location, store_of};
use super::args::{Cli, LogFormat, WatchArgs};
use crate::clock::Clock;
use crate::plan::Plan;
use crate::rollout::Event;
use crate::watch::{self, Follower, Note, Origin, Remote, Shared, Watch, WatchView};

pub async fn watch(cli: &Cli, args: &WatchArgs) -> anyhow::Result<Outcome> {
    raise_open_files_limit();
    let (location, origin) = match &args.remote {
        Some(url) => {
            let Some(location) = named_location(cli)? else {
                bail!(
                    "--remote needs a store: pass --state-dir DIR or --state postgres://… (or set FLOTILLA_STATE_DIR or FLOTILLA_STATE); the mirror is kept in its cache"
                );
            };
            let token = std::env::var(&args.remote_token_env)
                .ok()
                .filter(|t| !t.is_empty());
            let remote = Remote {
                url: url.clone(),
                branch: args.branch.clone().unwrap_or_else(|| "main".to_owned()),
                mirror: crate::store::mirror_dir(&location),
                token,
                identity: args.remote_identity.clone(),
                known_hosts: args.remote_known_hosts.clone(),
                timeout: args.interval.max(std::time::Duration::from_secs(60)),
            };
            (location, Origin::Remote(remote))
        }
        None => {
            let location = store_of(cli, &args.fleet_dir)?;
            let fleet_dir = args
                .fleet_dir
                .canonicalize()
                .with_context(|| format!("reading {}", args.fleet_dir.display()))?;
            let origin = Origin::Local {
                fleet_dir,
                branch: args.branch.clone(),
            };
            (location, origin)
        }
    };
    let store = crate::store::open(&location)?;
    let pinned = super::apply::pinned_keys(cli)?;
    let describe = match &origin {
        Origin::Local { fleet_dir, branch } => format!(
            "{} (branch {})",
            fleet_dir.display(),
            branch.as_deref().unwrap_or("checked out")
        ),
        Origin::Remote(r) => format!("{} (branch {})", r.url, r.branch),
    };
    let settings = watch::Settings {
        interval: args.interval,
        drift_interval: args.drift_interval,
        parallel: cli.global.parallel as usize,
        pinned_keys: pinned,
        actor: format!("watch:{}", actor()),
        identity_file: args.connection.identity_file.clone(),
        known_hosts: args.connection.known_hosts.clone(),
    };
    // Warm connections across drift checks: SSH masters outlive one drift interval.
    crate::transport::ssh::keep_masters_for(args.drift_interval + std::time::Duration::from_secs(60));
    let clock = Clock::wall();
    let shared = Arc::new(Shared::default());
    let cancel = super::signals::cancel();
    let listener = match &args.listen {
        Some(addr) => {
            let addr = watch::http::parse_listen(addr).map_err(anyhow::Error::msg)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            Some(listener)
        }
        None => None,
    };
    let view = LogView {
        json: matches!(cli.global.log_format, LogFormat::Json),
    };
    view.note(&Note::Started { origin: describe });
    let result = Watch {
        store: store.as_ref(),
        follower: Follower::new(origin),
        settings,
        clock,
        cancel,
        shared,
        view: &view,
        listener,
    }
    .run(args.once)
    .await;
    let outcome = result?;
    Ok(if args.once {
        outcome.into()
    } else {
        Outcome::Success
    })
}

/// Text: the plan as `flotilla plan` prints it, then one line per note and event. JSON: one
/// object per line, each with `time`, `event` and the revision.
struct LogView {
    json: bool,
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn with_fields(mut v: serde_json::Value, revision: Option<&str>) -> String {
    if let Some(map) = v.as_object_mut() {
        map.insert("time".into(), jiff::Timestamp::now().to_string().into());
        // One name for one thing across watch's log: the engine's events say `env`.
        if let Some(env) = map.remove("env") {
            map.insert("environment".into(), env);
        }
        if let Some(r) = revision {
            map.entry("revision").or_insert_with(|| r.into());
        }
    }
    v.to_string()
}

impl WatchView for LogView {
    fn plan(&self, revision: &str, plan: &Plan) {
        if self.json {
            let v = serde_json::json!({ "event": "plan", "plan": plan });
            emit(&with_fields(v, Some(revision)));
        } else {
            let text = crate::plan::text::render(
                plan,
                crate::plan::text::TextOptions {
                    color: false,
                    detail: false,
                },
            );
            emit(&format!(
                "plan at {}:\n{}",
                &revision[..revision.len().min(12)],
                text.trim_end()
            ));
        }
    }

    fn note(&self, note: &Note) {
        if self.json {
            emit(&with_fields(serde_json::to_value(note).unwrap_or_default(), None));
        } else {
            emit(&note.to_string());
        }
    }

    fn events(&self, revision: &str) -> (mpsc::UnboundedSender<Event>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let json = self.json;
        let revision = revision.to_owned();
        let task = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if json {
                    emit(&with_fields(
                        serde_json::to_value(&e).unwrap_or_default(),
                        Some(&revision),
                    ));
                } else {
                    emit(&e.line());
                }
            }
        });
        (tx, task)
    }
}

/// Raises the soft limit on open files to the hard one. Why: watch keeps a resident probe
/// shell open on every SSH host, three descriptors each, and the usual soft limit (1024, also
/// systemd's default for services) would stop it at about 300 hosts, where the hard limit
/// (524288 under systemd) does not. What Go's runtime does for every program.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed, which lives
    // on this stack frame for the whole call.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max && {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0
        }
    };
    if raised {
        tracing::debug!(
            from = lim.rlim_cur,
            to = lim.rlim_max,
            "raised the open files limit"
        );
    }
}
