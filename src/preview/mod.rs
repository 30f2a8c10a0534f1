//! `flotilla preview` (DESIGN §8): what merging a pull request will do. Two revisions are read
//! from Git objects (never checked out), head's desired state is planned against hosts at
//! base's desired state (`--against manifests`, no network) or as observed with base's
//! connection settings (`--against fleet`; hosts new in head are not contacted), and the plan
//! comes with notices for reviewers ([`notices`]) and a rollout forecast ([`forecast`]).
//! [`render`] turns it into a pull-request comment, text or JSON.
//!
//! Head is untrusted: it is read only through [`FleetRepo`] (no symlink followed, reads
//! bounded), no host is contacted with head's settings, and nothing of the controller's own
//! files is read for it: local roots are only planned against, never read, in manifests mode.

pub mod assume;
pub mod forecast;
pub mod locate;
pub mod notices;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::load::{LoadError, LoadedFleet, load};
use crate::observe::{Observation, ObserveError};
use crate::plan::Plan;
use crate::repo::{FleetRepo, RepoError};
use crate::resolve::DesiredHost;
use crate::store::{Store, StoreError};
use crate::text::escape_controls;

/// What the plan is made against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    /// Every host is assumed at base's desired state; no host is contacted.
    Manifests,
    /// Hosts are observed with base's connection settings; hosts new in head are not.
    Fleet,
}

/// One of the two revisions compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Revision {
    /// As given (`--base`, `--head`).
    pub rev: String,
    /// The full commit id.
    pub commit: String,
    /// The first line of the commit message (control characters escaped).
    pub subject: String,
}

impl Revision {
    fn of(rev: &str, repo: &FleetRepo) -> Revision {
        Revision {
            rev: escape_controls(rev),
            commit: repo.revision().unwrap_or_default().to_owned(),
            subject: escape_controls(&repo.subject().unwrap_or_default()),
        }
    }

    /// The first 8 digits of the commit id.
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(8)]
    }
}

/// Which revision a notice's file and line are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Base,
    Head,
}

/// What a notice is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    HostAdded,
    HostRemoved,
    HostDecommissioned,
    Trust,
    Connection,
    Commands,
    Rollout,
    Schedule,
    Environment,
    Artifact,
}

/// A change reviewers must see, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Notice {
    pub kind: NoticeKind,
    /// What changes, values as inline code (`port 22 -> 2222 on web-[01-20]`).
    pub message: String,
    /// The manifest that says so, relative to the fleet root.
    pub file: String,
    /// 1-based line in `file`.
    pub line: usize,
    /// `head`, or `base` for something head removed.
    pub revision: Side,
}

/// One environment's rollout forecast: when its first wave can start at the earliest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Forecast {
    pub environment: String,
    pub hosts_changed: usize,
    pub waves: usize,
    /// The window state at the forecast's start ("window closed; opens Sat …").
    pub window: String,
    /// The earliest moment the first wave can start, RFC 3339; null when nothing changes or
    /// it cannot start at a known time (see `blocked`).
    #[schemars(with = "Option<String>")]
    pub first_wave: Option<jiff::Timestamp>,
    /// The earliest moment the last wave can start (host changes taken as instant), RFC 3339.
    #[schemars(with = "Option<String>")]
    pub last_wave: Option<jiff::Timestamp>,
    /// What the first wave waits for: "staging converges and soaks 1d", "the window opens".
    pub after: Vec<String>,
    /// Why no time can be given (halted, paused, waits on an environment that cannot finish,
    /// a window that never opens); null otherwise.
    pub blocked: Option<String>,
    /// One line for people: "Sat 2026-11-28 02:00 CET (in 5d 20h), after the window opens".
    pub summary: String,
}

/// A located problem of an invalid head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Problem {
    pub message: String,
    /// Relative to the fleet root; null for a problem of no one file.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// A preview: the plan format plus `base`, `head`, `against`, `notices[]`, `forecast[]` and
/// `errors[]`. With an invalid head there is no plan: `errors` lists head's problems.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "Flotilla preview")]
pub struct Preview {
    /// The plan of head against base (absent when head is invalid).
    #[serde(flatten)]
    pub plan: Option<Plan>,
    /// The revision the pull request merges into.
    pub base: Revision,
    /// The pull request's revision.
    pub head: Revision,
    /// What head's plan is made against.
    pub against: Against,
    /// What reviewers must see, with file and line.
    pub notices: Vec<Notice>,
    /// Per environment, the earliest start of its first wave.
    pub forecast: Vec<Forecast>,
    /// Head's problems, when it is invalid (then there is no plan), or the artifacts of a
    /// valid head that fail their checks (then `apply` would refuse the run); either way the
    /// preview exits 1.
    pub errors: Vec<Problem>,
    /// Head's problems rendered rustc-style, for text and markdown.
    #[serde(skip)]
    pub errors_text: String,
}

/// Why a preview could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("--base {rev}: {source}")]
    Base { rev: String, source: RepoError },
    #[error("--head {rev}: {source}")]
    Head { rev: String, source: RepoError },
    #[error(
        "the base revision {rev} is invalid ({problems} problem(s)): preview compares with a valid base; `flotilla validate --rev {rev}` lists them"
    )]
    InvalidBase { rev: String, problems: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] crate::apply::EngineError),
    #[error("cannot read head's [trust] keys: {0}")]
    Trust(String),
    /// The store's location cannot be worked out (no `--state-dir`, no `HOME`).
    #[error("{0}")]
    NoStore(String),
}

/// Opens the store of the fleet named, if there is one.
pub type StoreOf<'a> = dyn Fn(&str) -> Result<Option<Box<dyn Store>>, PreviewError> + 'a;

/// What a preview needs besides the two revisions.
pub struct Request<'a> {
    pub fleet_dir: &'a Path,
    pub base: &'a str,
    pub head: &'a str,
    pub against: Against,
    /// When windows and freezes are evaluated and the forecast starts (`--at`); now otherwise.
    pub at: Option<jiff::Timestamp>,
    pub clock: Clock,
    /// The store of the fleet named (base's name), if one exists: pauses, halts, promotion
    /// records and last rollouts come from it.
    pub store: &'a StoreOf<'a>,
    /// SSH sessions at once (`--against fleet`).
    pub parallel: usize,
    /// `--identity-file`, `--known-hosts`: override base's settings for every host contacted.
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    /// The operator's pinned trusted keys (`--trusted-keys`): then only these count for head's
    /// artifacts, whatever head's `[trust]` says (DESIGN §9).
    pub pinned_keys: Option<String>,
}

/// Makes the preview. An invalid head is a preview too (with `errors`); an invalid base, an
/// unknown revision or an unreadable store is an error.
pub async fn preview(req: &Request<'_>) -> Result<Preview, PreviewError> {
    let open = |rev: &str| FleetRepo::open(req.fleet_dir, Some(rev));
    let base_repo = open(req.base).map_err(|source| PreviewError::Base {
        rev: req.base.to_owned(),
        source,
    })?;
    let head_repo = open(req.head).map_err(|source| PreviewError::Head {
        rev: req.head.to_owned(),
        source,
    })?;
    let (base_rev, head_rev) = (
        Revision::of(req.base, &base_repo),
        Revision::of(req.head, &head_repo),
    );
    let base = match load(&base_repo) {
        Ok(b) => b,
        Err(LoadError::Repo(source)) => {
            return Err(PreviewError::Base {
                rev: req.base.to_owned(),
                source,
            });
        }
        Err(LoadError::Invalid { diagnostics, .. }) => {
            return Err(PreviewError::InvalidBase {
                rev: req.base.to_owned(),
                problems: diagnostics.len(),
            });
        }
    };
    let empty = |errors, errors_text| Preview {
        plan: None,
        base: base_rev.clone(),
        head: head_rev.clone(),
        against: req.against,
        notices: Vec::new(),
        forecast: Vec::new(),
        errors,
        errors_text,
    };
    let head = match load(&head_repo) {
        Ok(h) => h,
        Err(LoadError::Repo(source)) => {
            return Err(PreviewError::Head {
                rev: req.head.to_owned(),
                source,
            });
        }
        Err(LoadError::Invalid {
            mut diagnostics,
            sources,
            partial,
        }) => {
            // Head's repository artifacts too, where its flotilla.toml is sound: a broken file
            // does not hide them.
            if let Some(partial) = partial {
                // An unreadable store must not hide head's problems: then no cache.
                let cache = (req.store)(base.fleet.name.as_str())
                    .ok()
                    .flatten()
                    .map(|s| s.artifact_cache_dir());
                diagnostics.extend(crate::load::partial_artifact_diagnostics(
                    &partial,
                    &diagnostics,
                    &sources,
                    &head_repo,
                    req.pinned_keys.as_deref(),
                    cache,
                ));
            }
            let text = crate::diagnostic::render(&diagnostics, &sources, false);
            return Ok(empty(problems(&diagnostics, &sources), text));
        }
    };
    let store = (req.store)(base.fleet.name.as_str())?;
    let notices = notices::compare(&base, &head, req.against == Against::Fleet);
    let targets: Vec<&DesiredHost> = head.desired.iter().collect();
    let pool = Arc::new(crate::transport::Pool::new());
    let observations = observe(req, &base, &targets, store.as_deref(), &base_repo, &pool).await;
    pool.close_all().await;
    // What the forecast needs of the observations and of base; both go before planning, which
    // is where 10,000 hosts peak in memory.
    let mut active: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (d, o) in targets.iter().zip(&observations) {
        let Ok(o) = o else { continue };
        let set = active.entry(d.environment.to_string()).or_default();
        set.extend(
            o.runtimes
                .iter()
                .filter_map(|(rt, r)| Some((rt.clone(), r.current.clone()?))),
        );
    }
    // Hosts base names and head does not are left as they are: the plan lists them.
    let mut gone: BTreeSet<String> = base
        .desired
        .iter()
        .filter(|b| head.fleet.host(b.name.as_str()).is_none())
        .map(|b| b.name.to_string())
        .collect();
    drop(base);
    let trust = crate::artifact::TrustPolicy::new(
        &head.fleet.trust.keys,
        head.fleet.trust.require_signatures,
        req.pinned_keys.as_deref(),
    )
    .map_err(|e| PreviewError::Trust(e.to_string()))?;
    let engine = crate::apply::Request {
        fleet: &head,
        repo: &head_repo,
        scope: crate::apply::Scope::Hosts(&targets),
        overrides: Default::default(),
        store: store.as_deref(),
        pool,
        memo: None,
        clock: req.clock,
        cancel: crate::cancel::Cancel::never(),
        parallel: req.parallel,
        at: req.at,
        trust: &trust,
        artifact_cache: None,
    };
    let mut plan = crate::apply::plan_observed(&engine, &targets, &observations)?;
    let needed = crate::apply::needed_artifacts(&plan, &targets, &observations);
    drop(observations);
    // Failures found with a saved URL signature are notices: apply fetches it again.
    let (provisional, failures): (Vec<_>, Vec<_>) = check_artifacts(&engine, &needed, store.as_deref())
        .into_iter()
        .partition(|f| f.provisional);
    gone.extend(plan.no_longer_managed.drain(..));
    plan.no_longer_managed = gone.into_iter().collect();
    let (promotions, rollouts) = crate::apply::records(&engine)?;
    let last_ended: BTreeMap<String, jiff::Timestamp> = rollouts
        .iter()
        .filter_map(|(env, r)| Some((env.clone(), r.ended_at.or(r.halted_at)?)))
        .collect();
    let forecast = forecast::forecast(&forecast::ForecastInput {
        fleet: &head.fleet,
        desired: &head.desired,
        plan: &plan,
        at: req.at.unwrap_or_else(|| req.clock.now()),
        promotions: &promotions,
        last_ended: &last_ended,
        active: &active,
    });
    let diagnostics = crate::artifact::ArtifactFailure::diagnostics(&failures, &head.sources);
    let text = crate::diagnostic::render_each(&diagnostics, &head.sources, false);
    let mut notices = notices;
    notices.extend(saved_signature_notices(&provisional, &head.sources));
    let mut out = empty(problems(&diagnostics, &head.sources), text);
    out.plan = Some(plan);
    out.notices = notices;
    out.forecast = forecast;
    Ok(out)
}

/// Artifact failures found with a saved URL signature, as notices at their manifest line:
/// at most 20 (notices are never cut from the comment), the last saying how many more.
fn saved_signature_notices(
    provisional: &[crate::artifact::ArtifactFailure],
    sources: &crate::diagnostic::Sources,
) -> Vec<Notice> {
    let shown = &provisional[..provisional.len().min(20)];
    let last = shown.len().saturating_sub(1);
    let mut out = Vec::new();
    for (i, (f, at)) in shown
        .iter()
        .zip(crate::artifact::locate(shown, sources))
        .enumerate()
    {
        let Some((file, span)) = at else { continue };
        let line = sources.line_col(&file, span.start).map_or(1, |(l, _)| l);
        let message = match i == last && provisional.len() > shown.len() {
            true => format!(
                "{} (and {} more whose saved signature fails)",
                escape_controls(&f.message),
                provisional.len() - shown.len()
            ),
            false => escape_controls(&f.message),
        };
        out.push(Notice {
            kind: NoticeKind::Artifact,
            message,
            line,
            file,
            revision: Side::Head,
        });
    }
    out
}

/// Diagnostics as `errors[]` entries: message (control characters escaped), file, line and
/// column.
fn problems(
    diagnostics: &[crate::diagnostic::Diagnostic],
    sources: &crate::diagnostic::Sources,
) -> Vec<Problem> {
    diagnostics
        .iter()
        .map(|d| {
            let (file, at) = match &d.location {
                Some(l) => (Some(l.file.clone()), sources.line_col(&l.file, l.span.start)),
                None => (None, None),
            };
            Problem {
                message: escape_controls(&d.message),
                file,
                line: at.map(|a| a.0),
                column: at.map(|a| a.1),
            }
        })
        .collect()
}

/// Head's artifacts as `plan` would check them (DESIGN §3): every one stored in the
/// repository, and the URL artifacts head's plan needs that the store's cache holds (no
/// network). Without a store, repository artifacts are checked in a temporary cache.
fn check_artifacts(
    engine: &crate::apply::Request<'_>,
    needed: &BTreeSet<(String, String)>,
    store: Option<&dyn Store>,
) -> Vec<crate::artifact::ArtifactFailure> {
    let cache = store.map(|s| s.artifact_cache_dir());
    let repo =
        crate::artifact::check_repository(&engine.fleet.fleet, engine.repo, engine.trust, cache.clone());
    let mut failures: Vec<_> = repo
        .errors
        .iter()
        .map(crate::artifact::ArtifactFailure::from)
        .collect();
    if let Some(dir) = cache {
        let cache = crate::artifact::ArtifactCache::new(dir);
        failures.extend(crate::apply::check_cached_urls(engine, needed, &cache).1);
    }
    failures
}

/// The hosts as the plan assumes them: at base's desired state (manifests), or observed with
/// base's connection settings (fleet). Hosts new in head are empty and never contacted.
async fn observe(
    req: &Request<'_>,
    base: &LoadedFleet,
    targets: &[&DesiredHost],
    store: Option<&dyn Store>,
    base_repo: &FleetRepo,
    pool: &Arc<crate::transport::Pool>,
) -> Vec<Result<Observation, ObserveError>> {
    let by_name: BTreeMap<&str, &DesiredHost> = base.desired.iter().map(|d| (d.name.as_str(), d)).collect();
    let store_id = store.map(|s| s.id().to_owned());
    match req.against {
        Against::Manifests => targets
            .iter()
            .map(|d| {
                Ok(assume::observation(
                    by_name.get(d.name.as_str()).copied(),
                    base.fleet.name.as_str(),
                    store_id.as_deref().unwrap_or_default(),
                ))
            })
            .collect(),
        Against::Fleet => {
            let mut probed: Vec<DesiredHost> = targets
                .iter()
                .filter_map(|d| Some(probe_as_base(by_name.get(d.name.as_str())?, d)))
                .collect();
            crate::resolve::override_connection(
                &mut probed,
                req.identity_file.as_deref(),
                req.known_hosts.as_deref(),
            );
            let refs: Vec<&DesiredHost> = probed.iter().collect();
            let mut found = crate::observe::observe_all(
                &refs,
                base_repo.fleet_dir(),
                pool,
                req.parallel,
                store_id.as_deref(),
                // A one-shot look: free space from every host, whatever the manifests ask.
                &|_| true,
                None,
            )
            .await
            .into_iter();
            targets
                .iter()
                .map(|d| match by_name.contains_key(d.name.as_str()) {
                    true => found.next().unwrap_or_else(|| Ok(Observation::default())),
                    false => Ok(Observation::default()),
                })
                .collect()
        }
    }
}

/// The host to probe: base's, with base's connection settings and only the file paths base
/// names, so head can make the probe read nothing base would not (a path only head names is
/// planned as missing; apply would take over a file found there). Where head names the same
/// path, its content is what the probe compares with, so a diff can be shown; a file either
/// revision marks `sensitive` stays sensitive, so head cannot unmask a secret on a host.
fn probe_as_base(base: &DesiredHost, head: &DesiredHost) -> DesiredHost {
    let mut d = base.clone();
    for (path, f) in &mut d.files {
        if let Some(h) = head.files.get(path) {
            let sensitive = f.value.sensitive || h.value.sensitive;
            *f = h.clone();
            f.value.sensitive = sensitive;
        }
    }
    d
}
