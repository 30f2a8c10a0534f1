//! The rollout forecast of a preview: for each environment, the earliest moment its first
//! wave can start once the change is merged and applied — windows, freezes, pauses, halts,
//! `min_interval` and promotion soak taken into account — and when its last wave could
//! start. Host changes are taken to be instant, so these are lower bounds. Pure: the plan,
//! the store's records and the moment are inputs.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::Forecast;
use crate::manifest::model::{Environment, Fleet, Pin};
use crate::plan::promotion::{PromotionRecord, uses};
use crate::plan::{Action, Kind, Plan};
use crate::resolve::DesiredHost;
use crate::rollout::policy::next_rollout_at;
use crate::schedule::window::{availability, format_countdown, show_local};

/// What the forecast is computed from.
pub struct ForecastInput<'a> {
    /// Head's fleet and every host's desired state at head.
    pub fleet: &'a Fleet,
    pub desired: &'a [DesiredHost],
    /// The preview's plan (halts and pauses of the store are in it already).
    pub plan: &'a Plan,
    /// The moment the forecast starts from (`--at`, or now).
    pub at: Timestamp,
    /// The store's promotion records (empty without a store).
    pub promotions: &'a [PromotionRecord],
    /// When each environment's last rollout ended (completed or halted), for `min_interval`.
    pub last_ended: &'a BTreeMap<String, Timestamp>,
    /// (runtime, version) active in each environment before the change: such a version is
    /// not gated by promotion (rolling back needs none).
    pub active: &'a BTreeMap<String, BTreeSet<(String, String)>>,
}

/// When a runtime version may start in an environment, as far as promotion goes.
enum Ready {
    At(Timestamp, Option<String>),
    Never(String),
}

/// The forecast of every environment of the plan, in the plan's (promotion) order.
pub fn forecast(input: &ForecastInput<'_>) -> Vec<Forecast> {
    let mut converged: BTreeMap<String, Option<Timestamp>> = BTreeMap::new();
    let mut out = Vec::new();
    for env in &input.plan.environments {
        let Some(cfg) = input.fleet.environments.get(env.name.as_str()) else {
            continue;
        };
        let hosts: Vec<_> = input
            .plan
            .hosts
            .iter()
            .filter(|h| h.environment == env.name && !h.changes.is_empty())
            .collect();
        let mut f = Forecast {
            environment: env.name.clone(),
            hosts_changed: hosts.len(),
            waves: env.waves.len(),
            window: env.view.window.clone(),
            first_wave: None,
            last_wave: None,
            after: Vec::new(),
            blocked: None,
            summary: String::new(),
        };
        let blocked = if hosts.is_empty() {
            converged.insert(env.name.clone(), Some(input.at));
            f.summary = "no changes".into();
            out.push(f);
            continue;
        } else if let Some(h) = &env.halted {
            Some(format!(
                "halted at wave {} ({}): starts again only with `flotilla apply --retry REASON`",
                h.wave, h.reason
            ))
        } else {
            env.paused
                .as_ref()
                .map(|why| format!("paused ({why}): starts after `flotilla resume`"))
        };
        if let Some(why) = blocked {
            converged.insert(env.name.clone(), None);
            f.summary = why.clone();
            f.blocked = Some(why);
            out.push(f);
            continue;
        }
        let mut not_before = input.at;
        if let Some((until, _)) = next_rollout_at(
            input.last_ended.get(&env.name).copied(),
            cfg.rollout.min_interval,
            input.at,
        ) {
            not_before = until;
            f.after.push(format!(
                "min_interval {} since the last rollout",
                crate::duration::format_duration(cfg.rollout.min_interval)
            ));
        }
        // Each host's readiness as far as promotion goes; all its changes go together.
        let mut memo: BTreeMap<(String, String), Ready> = BTreeMap::new();
        let mut host_ready: Vec<(usize, Result<Timestamp, String>)> = Vec::new();
        for h in &hosts {
            let mut ready = Ok(not_before);
            for c in &h.changes {
                let (Kind::Runtime, Action::Create | Action::Update, Some(v)) = (c.kind, c.action, &c.after)
                else {
                    continue;
                };
                let key = (c.name.clone(), v.clone());
                let r = memo
                    .entry(key.clone())
                    .or_insert_with(|| promotion_ready(input, &env.name, cfg, &key, &converged));
                ready = match (ready, &*r) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Ready::Never(why)) => Err(why.clone()),
                    (Ok(t), Ready::At(at, _)) => Ok(t.max(*at)),
                };
            }
            host_ready.push((h.wave.unwrap_or(1), ready));
        }
        for r in memo.values() {
            if let Ready::At(t, Some(why)) = r
                && *t > not_before
                && !f.after.contains(why)
            {
                f.after.push(why.clone());
            }
        }
        let Some(earliest) = host_ready
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .min()
            .copied()
        else {
            let why = host_ready
                .iter()
                .find_map(|(_, r)| r.clone().err())
                .unwrap_or_default();
            converged.insert(env.name.clone(), None);
            f.summary = why.clone();
            f.blocked = Some(why);
            out.push(f);
            continue;
        };
        let Some(start) = next_open(cfg, earliest) else {
            let why = format!("{}: no window opens", env.view.window);
            converged.insert(env.name.clone(), None);
            f.summary = why.clone();
            f.blocked = Some(why);
            out.push(f);
            continue;
        };
        if start > earliest {
            let a = availability(&cfg.windows, &cfg.freezes, earliest);
            f.after.push(match a.freeze.and_then(|i| cfg.freezes.get(i)) {
                Some(fr) if fr.reason.trim().is_empty() => "the freeze ends".to_owned(),
                Some(fr) => format!("the freeze ends ({})", fr.reason.trim()),
                None => "the window opens".to_owned(),
            });
        }
        f.first_wave = Some(start);
        // Later waves: each after the bake of the one before, in an open moment, and not
        // before its own hosts may go.
        let bake = cfg.rollout.bake;
        let mut t = Some(start);
        for wave in 2..=env.waves.len() {
            let own = host_ready
                .iter()
                .filter(|(w, _)| *w == wave)
                .filter_map(|(_, r)| r.as_ref().ok())
                .max()
                .copied();
            t = t.and_then(|t| {
                let after_bake = crate::duration::saturating_add(t, bake);
                next_open(cfg, own.map_or(after_bake, |o| o.max(after_bake)))
            });
        }
        f.last_wave = t;
        converged.insert(
            env.name.clone(),
            t.map(|t| crate::duration::saturating_add(t, bake)),
        );
        f.summary = summary(cfg, start, input.at, &f.after);
        out.push(f);
    }
    out
}

/// "Sat 2026-11-28 02:00 CET (in 5d 20h), after staging converges and soaks 24h".
fn summary(cfg: &Environment, start: Timestamp, at: Timestamp, after: &[String]) -> String {
    if start <= at && after.is_empty() {
        return "at once".to_owned();
    }
    let mut s = format!(
        "{} ({})",
        show_local(&cfg.windows, start),
        format_countdown(start.duration_since(at))
    );
    if !after.is_empty() {
        s.push_str(", after ");
        s.push_str(&after.join(" and "));
    }
    s
}

/// The first moment at or after `t` at which the environment may start a change.
fn next_open(cfg: &Environment, t: Timestamp) -> Option<Timestamp> {
    let a = availability(&cfg.windows, &cfg.freezes, t);
    if a.open { Some(t) } else { a.next_open }
}

/// When `runtime` at `version` may start in `env` as far as promotion goes (DESIGN §6.4):
/// every earlier environment in `fleet.promotion` that uses the runtime must have promoted
/// the version at least `promotion_soak` ago — by a record in the store, by converging in
/// this forecast, or because it runs that version already (its next apply records it).
fn promotion_ready(
    input: &ForecastInput<'_>,
    env: &str,
    cfg: &Environment,
    (runtime, version): &(String, String),
    converged: &BTreeMap<String, Option<Timestamp>>,
) -> Ready {
    let promotion = &input.fleet.promotion;
    let Some(pos) = promotion.iter().position(|e| e.as_str() == env) else {
        return Ready::At(input.at, None);
    };
    if input
        .active
        .get(env)
        .is_some_and(|a| a.contains(&(runtime.clone(), version.clone())))
    {
        return Ready::At(input.at, None);
    }
    let soak = cfg.rollout.promotion_soak;
    let soak_text = crate::duration::format_duration(soak);
    let mut ready = Ready::At(input.at, None);
    for earlier in &promotion[..pos] {
        let earlier = earlier.as_str();
        if !uses(input.desired, earlier, runtime) {
            continue;
        }
        let record = input
            .promotions
            .iter()
            .filter(|r| r.environment == earlier && r.runtime == *runtime && r.version == *version)
            .map(|r| r.at)
            .min();
        let this = match record {
            Some(at) => Ready::At(
                crate::duration::saturating_add(at, soak),
                Some(format!("{runtime} {version} soaks {soak_text} in {earlier}")),
            ),
            None if rolls_out(input, earlier, runtime, version) => {
                match converged.get(earlier).copied().flatten() {
                    Some(done) => Ready::At(
                        crate::duration::saturating_add(done, soak),
                        Some(if soak.is_zero() {
                            format!("{earlier} converges")
                        } else {
                            format!("{earlier} converges and soaks {soak_text}")
                        }),
                    ),
                    None => Ready::Never(format!(
                        "{runtime} {version} waits on {earlier}, which cannot finish its rollout"
                    )),
                }
            }
            None if runs(input.desired, earlier, runtime, version) => Ready::At(input.at, None),
            None => Ready::Never(format!(
                "{runtime} {version} waits on {earlier}, which does not roll it out in this change"
            )),
        };
        ready = match (ready, this) {
            (Ready::Never(w), _) | (_, Ready::Never(w)) => Ready::Never(w),
            (Ready::At(a, wa), Ready::At(b, wb)) => {
                if b > a {
                    Ready::At(b, wb)
                } else {
                    Ready::At(a, wa)
                }
            }
        };
    }
    ready
}

/// Whether the plan moves some host of `env` to `runtime` at `version`.
fn rolls_out(input: &ForecastInput<'_>, env: &str, runtime: &str, version: &str) -> bool {
    input.plan.hosts.iter().any(|h| {
        h.environment == env
            && h.changes
                .iter()
                .any(|c| c.kind == Kind::Runtime && c.name == runtime && c.after.as_deref() == Some(version))
    })
}

/// Whether every host of `env` that uses `runtime` wants `version` (and so, with no change
/// planned, runs it already).
fn runs(desired: &[DesiredHost], env: &str, runtime: &str, version: &str) -> bool {
    desired
        .iter()
        .filter(|h| h.environment.as_str() == env)
        .filter_map(|h| h.runtimes.get(runtime))
        .all(|p| matches!(&p.value, Pin::Version(v) if v.as_str() == version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{HostInput, PlanInput};

    const RUNTIME: &str = "[[version]]\nversion = \"1\"\nartifact = \"https://x.invalid/1.tgz\"\nsha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"\n[[version]]\nversion = \"2\"\nartifact = \"https://x.invalid/2.tgz\"\nsha256 = \"2222222222222222222222222222222222222222222222222222222222222222\"\n";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// staging (s) and prod (p) with `app` at `version`; prod's environment file gets `prod`.
    fn fleet(version: &str, prod: &str) -> crate::load::LoadedFleet {
        crate::load::testing::load_files(&[
            (
                "flotilla.toml",
                "[fleet]\nname = \"t\"\npromotion = [\"staging\", \"prod\"]\n[defaults]\ntransport = \"local\"\n",
            ),
            (
                "environments/staging.toml",
                &format!("[runtimes]\napp = \"{version}\"\n"),
            ),
            (
                "environments/prod.toml",
                &format!("[runtimes]\napp = \"{version}\"\n{prod}"),
            ),
            (
                "hosts/h.toml",
                "[[host]]\nname = \"s\"\nenvironment = \"staging\"\nroot = \"r/s\"\n[[host]]\nname = \"p\"\nenvironment = \"prod\"\nroot = \"r/p\"\n",
            ),
            ("runtimes/app.toml", RUNTIME),
        ])
    }

    fn forecast_of(prod: &str, promotions: &[PromotionRecord], at: Timestamp) -> Vec<Forecast> {
        let (base, head) = (fleet("1", prod), fleet("2", prod));
        let obs: Vec<_> = base
            .desired
            .iter()
            .map(|d| super::super::assume::observation(Some(d), "t", "x"))
            .collect();
        let plan = crate::plan::build(&PlanInput {
            fleet: &head.fleet,
            revision: None,
            hosts: head
                .desired
                .iter()
                .zip(&obs)
                .map(|(d, o)| HostInput {
                    desired: d,
                    observed: Ok(o),
                    refused: None,
                    take_over: false,
                })
                .collect(),
            at,
            observed_at: at,
            all_desired: &head.desired,
            promotions,
            halts: &Default::default(),
        });
        forecast(&ForecastInput {
            fleet: &head.fleet,
            desired: &head.desired,
            plan: &plan,
            at,
            promotions,
            last_ended: &BTreeMap::new(),
            active: &BTreeMap::new(),
        })
    }

    #[test]
    fn a_freeze_and_a_recorded_promotion_move_the_first_wave() {
        let at = ts("2026-12-01T00:00:00Z");
        let freeze = "[rollout]\npromotion_soak = \"2h\"\n[[freeze]]\nfrom = \"2026-12-01T00:00:00Z\"\nuntil = \"2026-12-03T00:00:00Z\"\nreason = \"launch\"\n";
        let f = forecast_of(freeze, &[], at);
        assert_eq!(f[0].summary, "at once");
        assert_eq!(f[1].first_wave, Some(ts("2026-12-03T00:00:00Z")));
        assert_eq!(
            f[1].after,
            ["staging converges and soaks 2h", "the freeze ends (launch)"]
        );
        // staging promoted version 2 long ago: only the freeze holds prod.
        let record = PromotionRecord {
            environment: "staging".into(),
            runtime: "app".into(),
            version: "2".into(),
            at: ts("2026-11-01T00:00:00Z"),
        };
        let f = forecast_of(
            "[rollout]\npromotion_soak = \"2h\"\n",
            std::slice::from_ref(&record),
            at,
        );
        assert_eq!((f[1].first_wave, f[1].summary.as_str()), (Some(at), "at once"));
        // Promoted an hour ago: the soak has an hour left.
        let recent = PromotionRecord {
            at: ts("2026-11-30T23:00:00Z"),
            ..record
        };
        let f = forecast_of("[rollout]\npromotion_soak = \"2h\"\n", &[recent], at);
        assert_eq!(f[1].first_wave, Some(ts("2026-12-01T01:00:00Z")));
        assert_eq!(f[1].after, ["app 2 soaks 2h in staging"]);
    }

    #[test]
    fn a_window_that_never_opens_blocks_with_why() {
        let never = "[[window]]\ndays = []\nstart = \"02:00\"\nduration = \"1h\"\n";
        let f = forecast_of(never, &[], ts("2026-12-01T00:00:00Z"));
        assert_eq!(f[1].first_wave, None);
        assert!(
            f[1].blocked.as_deref().unwrap().contains("no window opens"),
            "{:?}",
            f[1]
        );
    }
}
