//! The commands: each loads what it needs, calls the library, prints through a view and
//! returns an [`Outcome`].

use anyhow::Context as _;

use super::Outcome;
use super::args::{Cli, Command, Connection, Format, PlanArgs, SchemaArgs, ShowArgs, Source, StatusArgs};
use super::output::{errln, out, outln, stderr_color};
use super::views;
use crate::diagnostic;
use crate::load::{LoadError, LoadedFleet, load};
use crate::plan;
use crate::repo::FleetRepo;
use crate::target::Selector;

pub async fn run(cli: &Cli, color: bool) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::Validate(src) => validate(cli, src, color),
        Command::Plan(args) => plan_cmd(cli, args, color).await,
        Command::Apply(args) => super::apply::apply(cli, args, color).await,
        Command::Preview(args) => super::preview::preview(cli, args, color).await,
        Command::Show(args) => show(cli, args, color),
        Command::History(args) => super::apply::history(cli, args),
        Command::Watch(args) => super::watch::watch(cli, args).await,
        Command::Pause(args) => super::pause::pause(cli, args),
        Command::Resume(args) => super::pause::resume(cli, args),
        Command::Status(args) => status(cli, args, color).await,
        Command::Schema(args) => schema(args),
        Command::Init(args) => super::init::init(args),
        Command::Release(args) => super::release::release(args),
        Command::Completions(args) => super::tooling::completions(args),
        Command::Man(args) => super::tooling::man(args),
        Command::Store(args) => super::store::store(args),
    }
}

/// Loads the fleet, printing every problem on failure (with the repository artifacts of the
/// files that are valid: a broken file does not hide them); `connection` flags, where the
/// command takes them, override the manifests.
pub(super) fn open(
    cli: &Cli,
    src: &Source,
    connection: Option<&Connection>,
    color: bool,
) -> anyhow::Result<Result<(FleetRepo, LoadedFleet), Outcome>> {
    let repo = FleetRepo::open(&src.fleet_dir, src.rev.as_deref())?;
    if src.rev.is_none() && repo.head().is_none() && repo.repo_dir().is_none() {
        errln!(
            "note: {} is not inside a Git repository; plans of it have no revision",
            src.fleet_dir.display()
        );
    } else if src.rev.is_none() && repo.is_dirty() {
        errln!(
            "note: reading the working tree, which has uncommitted changes{}",
            repo.head()
                .map(|h| format!(" (on top of {})", &h[..h.len().min(12)]))
                .unwrap_or_default()
        );
    }
    match load(&repo) {
        Ok(mut loaded) => {
            if let Some(c) = connection {
                loaded.override_connection(c.identity_file.as_deref(), c.known_hosts.as_deref());
            }
            Ok(Ok((repo, loaded)))
        }
        Err(LoadError::Repo(e)) => Err(e.into()),
        Err(LoadError::Invalid {
            mut diagnostics,
            sources,
            partial,
        }) => {
            if let Some(partial) = partial {
                // The store's cache if there is one (what it verified is not hashed again).
                let cache = super::apply::read_only_location(cli, partial.name.as_str())
                    .ok()
                    .flatten()
                    .map(|l| crate::store::artifact_cache_dir(&l));
                // A pinned-keys problem is reported by the command itself; here it must not
                // hide the manifests' problems.
                let pinned = super::apply::pinned_keys(cli).ok().flatten();
                diagnostics.extend(crate::load::partial_artifact_diagnostics(
                    &partial,
                    &diagnostics,
                    &sources,
                    &repo,
                    pinned.as_deref(),
                    cache,
                ));
            }
            super::output::err(&diagnostic::render(&diagnostics, &sources, stderr_color(color)));
            Ok(Err(Outcome::Failure))
        }
    }
}

fn validate(cli: &Cli, src: &Source, color: bool) -> anyhow::Result<Outcome> {
    let (repo, loaded) = match open(cli, src, None, color)? {
        Ok(x) => x,
        Err(o) => return Ok(o),
    };
    // The store's cache, when there is a store: what it verified before is not re-hashed.
    let (location, store) = super::apply::read_only_store(cli, loaded.fleet.name.as_str())?;
    let cache = match &store {
        Some(s) => Some(s.artifact_cache_dir()),
        None => location.as_ref().map(crate::store::artifact_cache_dir),
    };
    let (warnings, bad): (Vec<_>, Vec<_>) = super::release::check_repo_artifacts(
        &repo,
        &loaded,
        cache,
        super::apply::pinned_keys(cli)?.as_deref(),
    )?
    .into_iter()
    .partition(|f| f.provisional);
    for w in &warnings {
        errln!("warning: {w}");
    }
    if !bad.is_empty() {
        super::output::err(&views::artifact_errors(
            &bad,
            &loaded.sources,
            stderr_color(color),
        ));
        errln!(
            "error: {} artifact(s) in the repository failed their checks (the manifests themselves are valid)",
            bad.len()
        );
        return Ok(Outcome::Failure);
    }
    let f = &loaded.fleet;
    outln!(
        "The manifests are valid: fleet {}, {} environment{}, {} host{}, {} runtime{}{}.",
        f.name,
        f.environments.len(),
        plural(f.environments.len()),
        f.hosts.len(),
        plural(f.hosts.len()),
        f.runtimes.len(),
        plural(f.runtimes.len()),
        repo.revision()
            .map(|r| format!(" at {}", &r[..12.min(r.len())]))
            .unwrap_or_default()
    )?;
    Ok(Outcome::Success)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

async fn plan_cmd(cli: &Cli, args: &PlanArgs, color: bool) -> anyhow::Result<Outcome> {
    let at = match &args.at {
        Some(s) => Some(parse_at(s)?),
        None => None,
    };
    let (repo, loaded) = match open(cli, &args.source, Some(&args.connection), color)? {
        Ok(x) => x,
        Err(o) => return Ok(o),
    };
    let targets = select(&loaded, &args.targeting)?;
    let (plan, bad_artifacts, _) = plan_with_engine(cli, &loaded, &repo, &targets, at, color).await?;
    if let Some(out) = &args.out {
        let saved = serde_json::to_string_pretty(&plan::SavedPlan::new(plan.clone()))?;
        std::fs::write(out, saved + "\n")
            .with_context(|| format!("writing the plan to {}", out.display()))?;
    }
    match args.format {
        Format::Text => out(&plan::text::render(
            &plan,
            plan::text::TextOptions {
                color,
                detail: args.detail,
            },
        ))?,
        Format::Json => outln!("{}", plan.to_json())?,
        Format::Markdown => {
            let rev = plan
                .revision
                .as_deref()
                .map_or("the working tree".to_owned(), |r| {
                    format!("`{}`", &r[..12.min(r.len())])
                });
            let header = plan::markdown::MarkdownHeader {
                title: format!("Flotilla plan for `{}` at {rev}", plan.fleet),
                ..Default::default()
            };
            out(&plan::markdown::render(&plan, &header))?;
        }
    }
    if bad_artifacts > 0 || (plan.summary.hosts_unreachable > 0 && !args.skip_unreachable) {
        return Ok(Outcome::Failure);
    }
    // A host that could not be observed may differ: with --skip-unreachable that is not an
    // error, but --detailed-exitcode must not claim "no changes" (2, "may change", instead).
    if args.detailed_exitcode && !plan.proves_converged() {
        return Ok(Outcome::Changes);
    }
    Ok(Outcome::Success)
}

/// The hosts the targeting flags pick; flags that pick nothing are an error, so a typo never
/// plans or applies "nothing".
pub(super) fn select<'a>(
    loaded: &'a LoadedFleet,
    t: &super::args::Targeting,
) -> anyhow::Result<Vec<&'a crate::resolve::DesiredHost>> {
    let selector = Selector::new(&loaded.fleet, &t.envs, &t.hosts, &t.labels, &t.exclude)?;
    Ok(selector.select(&loaded.desired)?)
}

/// Observes and plans `targets` through the engine (read-only: no lock, no host changed).
async fn plan_with_engine(
    cli: &Cli,
    loaded: &LoadedFleet,
    repo: &FleetRepo,
    targets: &[&crate::resolve::DesiredHost],
    at: Option<jiff::Timestamp>,
    color: bool,
) -> anyhow::Result<(plan::Plan, usize, Option<Box<dyn crate::store::Store>>)> {
    // The store, when there is one, only lends its records and artifact cache (a plan takes no
    // lock); no location at all (no HOME) is no store.
    let (location, store) = super::apply::read_only_store(cli, loaded.fleet.name.as_str())?;
    let pool = std::sync::Arc::new(crate::transport::Pool::new());
    let trust = crate::artifact::TrustPolicy::new(
        &loaded.fleet.trust.keys,
        loaded.fleet.trust.require_signatures,
        super::apply::pinned_keys(cli)?.as_deref(),
    )?;
    let request = crate::apply::Request {
        fleet: loaded,
        repo,
        scope: crate::apply::Scope::Hosts(targets),
        overrides: Default::default(),
        store: store.as_deref(),
        pool: pool.clone(),
        memo: None,
        clock: crate::clock::Clock::wall(),
        // A plan changes nothing: Ctrl-C ends it the default way, at once.
        cancel: crate::cancel::Cancel::never(),
        parallel: cli.global.parallel as usize,
        at,
        trust: &trust,
        artifact_cache: location.as_ref().map(crate::store::artifact_cache_dir),
    };
    let planned = crate::apply::prepare(&request).await;
    pool.close_all().await;
    let planned = planned?;
    let (repo_bad, cached_bad) = (&planned.artifact_errors, &planned.cached_artifact_errors);
    for w in &planned.artifact_warnings {
        errln!("warning: {w}");
    }
    if !repo_bad.is_empty() || !cached_bad.is_empty() {
        let all: Vec<_> = repo_bad.iter().chain(cached_bad).cloned().collect();
        super::output::err(&views::artifact_errors(
            &all,
            &loaded.sources,
            stderr_color(color),
        ));
    }
    if !repo_bad.is_empty() {
        errln!(
            "error: {} artifact(s) in the repository failed their checks; apply would refuse the whole run",
            repo_bad.len()
        );
    }
    if !cached_bad.is_empty() {
        errln!(
            "error: {} artifact(s) in the artifact cache failed their checks; apply fetches them again and refuses the run if they still fail",
            cached_bad.len()
        );
    }
    Ok((planned.plan, repo_bad.len() + cached_bad.len(), store))
}

/// `--at`: an RFC 3339 instant, or a civil time with a zone in brackets.
pub(super) fn parse_at(s: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if let Ok(z) = s.parse::<jiff::Zoned>() {
        return Ok(z.timestamp());
    }
    anyhow::bail!("--at {s}: not a time; write RFC 3339 such as 2026-11-28T02:30:00+01:00")
}

fn show(cli: &Cli, args: &ShowArgs, color: bool) -> anyhow::Result<Outcome> {
    let (_repo, loaded) = match open(cli, &args.source, None, color)? {
        Ok(x) => x,
        Err(o) => return Ok(o),
    };
    let Some(desired) = loaded.desired.iter().find(|h| h.name.as_str() == args.host) else {
        let names = loaded.desired.iter().map(|h| h.name.as_str());
        let hint = diagnostic::closest(&args.host, names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        anyhow::bail!("unknown host `{}`{hint}", args.host);
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(desired)?)?,
        _ => {
            let origin = loaded.fleet.host(&args.host).map(|h| {
                let (l, c) = loaded
                    .sources
                    .line_col(&h.origin.file, h.origin.span.start)
                    .unwrap_or((0, 0));
                format!("{}:{l}:{c}", h.origin.file)
            });
            out(&crate::show::render(desired, origin.as_deref().unwrap_or("?")))?;
        }
    }
    Ok(Outcome::Success)
}

fn schema(args: &SchemaArgs) -> anyhow::Result<Outcome> {
    let mut stale = Vec::new();
    if !args.check {
        std::fs::create_dir_all(&args.out_dir)
            .with_context(|| format!("creating {}", args.out_dir.display()))?;
    }
    for (name, text) in crate::schema::all() {
        let path = args.out_dir.join(name);
        if args.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            outln!("wrote {}", path.display())?;
        }
    }
    if !stale.is_empty() {
        errln!("error: out of date: {} (run `flotilla schema`)", stale.join(", "));
        return Ok(Outcome::Failure);
    }
    Ok(Outcome::Success)
}

async fn status(cli: &Cli, args: &StatusArgs, color: bool) -> anyhow::Result<Outcome> {
    let (repo, loaded) = match open(cli, &args.source, Some(&args.connection), color)? {
        Ok(x) => x,
        Err(o) => return Ok(o),
    };
    let targets = select(&loaded, &args.targeting)?;
    let (plan, _, store) = plan_with_engine(cli, &loaded, &repo, &targets, None, color).await?;
    let events = store
        .as_ref()
        .and_then(|s| s.audit(&crate::store::AuditFilter::default()).ok())
        .unwrap_or_default();
    let last_event = |host: &str| {
        events
            .iter()
            .rev()
            .find(|e| e.host.as_deref() == Some(host))
            .cloned()
    };
    let status = crate::status::build(&plan, &last_event);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        out(&crate::status::render_text(&status))?;
    }
    Ok(if plan.summary.hosts_unreachable > 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}
