//! `flotilla apply` and `flotilla history`: arguments in, the engine's plan shown and
//! confirmed, the engine's events and report rendered. No orchestration lives here.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::Outcome;
use super::args::{ApplyArgs, Cli, HistoryArgs, Source};
use super::commands::{open, select};
use super::output::{out, outln};
use super::views;
use crate::apply::{self as engine, ApplyOptions, Overrides, Request, RoundsEnd, Scope};
use crate::artifact::TrustPolicy;
use crate::clock::Clock;
use crate::plan::{self, SavedPlan};
use crate::repo::FleetRepo;
use crate::store::{AuditFilter, Holder, Location};
use crate::transport::Pool;

const PROMPT: &str = "Do you want to apply these changes? Only 'yes' will be accepted:";

/// The store named on the command line or in the environment: --state / FLOTILLA_STATE (a
/// PostgreSQL URL) or --state-dir / FLOTILLA_STATE_DIR; `None` when neither is given.
pub(super) fn named_location(cli: &Cli) -> anyhow::Result<Option<Location>> {
    if let Some(url) = &cli.global.state {
        return Ok(Some(Location::parse_url(url)?));
    }
    Ok(cli.global.state_dir.clone().map(Location::Dir))
}

/// The store for `fleet`: --state / FLOTILLA_STATE, --state-dir / FLOTILLA_STATE_DIR, else
/// the XDG default.
/// The operator's pinned trusted keys (`--trusted-keys FILE` / `FLOTILLA_TRUSTED_KEYS`), read
/// once: every command that checks an artifact trusts only these when they are given (DESIGN
/// §9).
pub(super) fn pinned_keys(cli: &Cli) -> anyhow::Result<Option<String>> {
    cli.global
        .trusted_keys
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p).with_context(|| format!("reading trusted keys from {}", p.display()))
        })
        .transpose()
}

/// Where the store is (if anywhere) and the store already there (if any).
pub(super) type ReadOnlyStore = (Option<Location>, Option<Box<dyn crate::store::Store>>);

/// [`read_only_location`] and the store already there, if any (read-only commands never
/// create one).
pub(super) fn read_only_store(cli: &Cli, fleet: &str) -> anyhow::Result<ReadOnlyStore> {
    let location = read_only_location(cli, fleet)?;
    let store = location
        .as_ref()
        .map(crate::store::open_existing)
        .transpose()?
        .flatten();
    Ok((location, store))
}

pub(super) fn store_location(cli: &Cli, fleet: &str) -> anyhow::Result<Location> {
    read_only_location(cli, fleet)?
        .context("no store directory: set --state-dir, FLOTILLA_STATE_DIR, XDG_STATE_HOME or HOME")
}

/// The store location for commands that only read it (`validate`, `plan`, `status`): `None`
/// when none is named and neither XDG_STATE_HOME nor HOME is set (a bare container or CI job),
/// and they then go without the store's records and artifact cache instead of failing.
pub(super) fn read_only_location(cli: &Cli, fleet: &str) -> anyhow::Result<Option<Location>> {
    if let Some(location) = named_location(cli)? {
        return Ok(Some(location));
    }
    Ok(crate::store::default_dir(
        std::env::var_os("XDG_STATE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
        fleet,
    )
    .map(Location::Dir))
}

/// The store of the fleet in `fleet_dir`, for commands that must work even when its manifests
/// do not validate (history, pause, resume): only the fleet name is read, and only when no
/// store is named.
pub(super) fn store_of(cli: &Cli, fleet_dir: &std::path::Path) -> anyhow::Result<Location> {
    let name = match named_location(cli)? {
        Some(location) => return Ok(location),
        None => {
            let repo = FleetRepo::open(fleet_dir, None)?;
            let files = repo.manifest_files()?;
            files
                .iter()
                .find(|f| f.path == "flotilla.toml")
                .and_then(|f| toml::from_str::<crate::manifest::raw::RawFleetFile>(&f.text).ok())
                .map(|f| f.fleet.name.get().clone())
                .context("cannot read the fleet name from flotilla.toml (run `flotilla validate`)")?
        }
    };
    store_location(cli, &name)
}

pub(super) fn actor() -> String {
    let me = Holder::this_process("", jiff::Timestamp::now());
    format!("{}@{}", me.user, me.machine)
}

/// Asks for the exact confirmation; refuses without a terminal.
fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to confirm on: run `flotilla apply --auto-approve` to apply without asking");
    }
    out(&format!("\n{PROMPT} "))?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

fn read_saved(p: &PathBuf) -> anyhow::Result<SavedPlan> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("reading the saved plan {}", p.display()))?;
    let saved: SavedPlan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a plan saved by `flotilla plan --out`", p.display()))?;
    if saved.plan.revision.is_none() {
        bail!(
            "{} is a plan of an uncommitted tree, which cannot be applied later: commit, then `flotilla plan --out` again",
            p.display()
        );
    }
    Ok(saved)
}

pub async fn apply(cli: &Cli, args: &ApplyArgs, color: bool) -> anyhow::Result<Outcome> {
    let saved = args.plan.as_ref().map(read_saved).transpose()?;
    let source = Source {
        fleet_dir: args.source.fleet_dir.clone(),
        rev: saved
            .as_ref()
            .and_then(|s| s.plan.revision.clone())
            .or(args.source.rev.clone()),
    };
    let opened = open(cli, &source, Some(&args.connection), color).map_err(|e| {
        // A saved plan names its revision; one this repository cannot find is a plan made
        // elsewhere or before history was rewritten, not a typo on the command line.
        match (&args.plan, e.downcast_ref::<crate::repo::RepoError>()) {
            (Some(file), Some(crate::repo::RepoError::UnknownRevision { rev, .. })) => anyhow::anyhow!(
                "{} was planned at revision {rev}, which this repository does not have (history \
                 rewritten, or planned in another clone): fetch it, or plan again with \
                 `flotilla plan --out`",
                file.display()
            ),
            _ => e,
        }
    })?;
    let (repo, loaded) = match opened {
        Ok(x) => x,
        Err(o) => return Ok(o),
    };
    if source.rev.is_none() && !args.allow_dirty {
        repo.require_committed()?;
    }
    let pinned = pinned_keys(cli)?;
    let trust = TrustPolicy::new(
        &loaded.fleet.trust.keys,
        loaded.fleet.trust.require_signatures,
        pinned.as_deref(),
    )?;
    let store = crate::store::open(&store_location(cli, loaded.fleet.name.as_str())?)?;
    let targets = match &saved {
        Some(_) => Vec::new(),
        None => select(&loaded, &args.targeting)?,
    };
    let cancel = super::signals::cancel();
    let options = ApplyOptions {
        actor: actor(),
        dirty: source.rev.is_none() && repo.is_dirty(),
        unattended: false,
        detail: views::detail(cli),
    };
    let request = |pool: Arc<Pool>| Request {
        fleet: &loaded,
        repo: &repo,
        scope: match &saved {
            Some(s) => Scope::Saved(s),
            None => Scope::Hosts(&targets),
        },
        overrides: Overrides {
            windows: args.override_windows.clone(),
            freeze: args.override_freeze.clone(),
            take_over: args.take_over.clone(),
            retry: args.retry.clone(),
        },
        store: Some(store.as_ref()),
        pool,
        memo: None,
        clock: Clock::wall(),
        trust: &trust,
        artifact_cache: None,
        cancel: cancel.clone(),
        parallel: cli.global.parallel as usize,
        at: None,
    };
    let rounds = engine::Rounds {
        auto_approve: args.auto_approve,
        wait: args.wait,
    };
    let mut view = ApplyView {
        cli,
        color,
        cancel: cancel.clone(),
        sources: &loaded.sources,
    };
    Ok(
        match engine::apply_rounds(&request, &options, rounds, &mut view).await? {
            RoundsEnd::NothingToDo { incomplete: true } | RoundsEnd::Declined => Outcome::Failure,
            RoundsEnd::NothingToDo { incomplete: false } => Outcome::Success,
            RoundsEnd::Applied(report) => report.outcome.into(),
        },
    )
}

/// What `apply` shows and asks: the plan, the prompt, the engine's events and summary, and
/// the countdown of `--wait`.
struct ApplyView<'c> {
    cli: &'c Cli,
    color: bool,
    cancel: crate::cancel::Cancel,
    /// The manifests' text, so artifact errors can quote the line to fix.
    sources: &'c crate::diagnostic::Sources,
}

#[async_trait::async_trait]
impl engine::RoundView for ApplyView<'_> {
    type Error = anyhow::Error;

    fn plan(&mut self, planned: &engine::Planned<'_>) -> anyhow::Result<()> {
        let options = plan::text::TextOptions {
            color: self.color,
            detail: false,
        };
        out(&plan::text::render(planned.shown(), options))
    }

    fn confirm(&mut self) -> anyhow::Result<bool> {
        let yes = confirm()?;
        if !yes {
            outln!("Apply cancelled.")?;
        }
        Ok(yes)
    }

    fn events(
        &mut self,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<crate::rollout::Event>,
        tokio::task::JoinHandle<()>,
    ) {
        views::apply_events(self.cli)
    }

    fn report(&mut self, report: &engine::Report) -> anyhow::Result<()> {
        if !report.artifact_errors.is_empty() {
            super::output::err(&views::artifact_errors(
                &report.artifact_errors,
                self.sources,
                super::output::stderr_color(self.color),
            ));
        }
        // The hosts are changed by now: a closed stdout must not hide how it went, so the
        // exit code stays the apply's.
        super::output::unless_closed(out(&views::apply_summary(report)))
    }

    async fn wait(&mut self, wake: Option<jiff::Timestamp>) -> anyhow::Result<()> {
        views::countdown(wake, &self.cancel).await
    }
}

pub fn history(cli: &Cli, args: &HistoryArgs) -> anyhow::Result<Outcome> {
    let location = store_of(cli, &args.fleet_dir)?;
    let Some(store) = crate::store::open_existing(&location)? else {
        bail!("no store at {location}: nothing has been applied with it yet");
    };
    // An unknown host is an error (DESIGN §11), not an empty history: a typo must not read as
    // "nothing ever happened there". Known: named by the manifests, or seen by this store.
    if let Some(host) = &args.host {
        let in_manifests = || {
            let repo = FleetRepo::open(&args.fleet_dir, None).ok()?;
            let loaded = crate::load::load(&repo).ok()?;
            Some(loaded.fleet.host(host).is_some())
        };
        if !store.known_hosts()?.iter().any(|h| h == host) && in_manifests() != Some(true) {
            bail!(
                "unknown host `{host}`: the manifests do not name it and this store never changed it (check the name: --host takes a whole host name)"
            );
        }
    }
    let events = store.audit(&AuditFilter {
        host: args.host.clone(),
        env: args.env.clone(),
        limit: args.limit,
    })?;
    out(&crate::store::render_history(&events, args.json))?;
    Ok(Outcome::Success)
}
