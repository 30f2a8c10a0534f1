//! `flotilla pause` and `flotilla resume` (DESIGN §10): a pause record in the store, audited.
//! Neither takes the apply lock: a pause is most needed while an apply or `watch` runs, and
//! they read the pause records before every host start.

use anyhow::bail;

use super::Outcome;
use super::apply::{actor, store_of};
use super::args::{Cli, PauseArgs, ResumeArgs};
use super::output::outln;
use crate::repo::FleetRepo;

/// Refuses an environment the working tree does not define. Only file names are looked at,
/// so a fleet whose manifests do not validate can still be paused.
fn check_env(fleet_dir: &std::path::Path, env: &Option<String>) -> anyhow::Result<()> {
    let Some(env) = env else { return Ok(()) };
    let repo = FleetRepo::open(fleet_dir, None)?;
    let wanted = format!("environments/{env}.toml");
    let files = repo.manifest_files()?;
    if !files.iter().any(|f| f.path == wanted) {
        let known: Vec<&str> = files
            .iter()
            .filter_map(|f| f.path.strip_prefix("environments/")?.strip_suffix(".toml"))
            .collect();
        bail!(
            "unknown environment `{env}`: the fleet defines {} (environments/NAME.toml)",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    Ok(())
}

fn scope(env: &Option<String>) -> String {
    env.as_ref()
        .map_or_else(|| "the whole fleet".to_owned(), |e| format!("environment {e}"))
}

pub fn pause(cli: &Cli, args: &PauseArgs) -> anyhow::Result<Outcome> {
    if args.reason.trim().is_empty() {
        bail!("a pause needs a reason: `flotilla pause [--env NAME] REASON`");
    }
    check_env(&args.fleet_dir, &args.env)?;
    let store = crate::store::open(&store_of(cli, &args.fleet_dir)?)?;
    let pause = crate::store::pausing::pause(
        store.as_ref(),
        args.env.as_deref(),
        &args.reason,
        &actor(),
        jiff::Timestamp::now(),
    )?;
    let resume = match &args.env {
        Some(env) => format!("flotilla resume --env {env}"),
        None => "flotilla resume".to_owned(),
    };
    outln!(
        "Paused {}: {}\nIn-flight hosts finish; no host change starts there until `{resume}`.",
        scope(&args.env),
        pause.reason
    )?;
    Ok(Outcome::Success)
}

pub fn resume(cli: &Cli, args: &ResumeArgs) -> anyhow::Result<Outcome> {
    check_env(&args.fleet_dir, &args.env)?;
    let store = crate::store::open(&store_of(cli, &args.fleet_dir)?)?;
    let resumed = crate::store::pausing::resume(
        store.as_ref(),
        args.env.as_deref(),
        &actor(),
        jiff::Timestamp::now(),
    )?;
    match &resumed.lifted {
        None => outln!("{} was not paused; nothing to resume.", scope(&args.env))?,
        Some(lifted) => outln!("Resumed {} (paused for {}).", scope(&args.env), lifted.describe())?,
    }
    if let Some(fleet) = &resumed.fleet_still_paused {
        outln!(
            "The whole fleet stays paused ({}): `flotilla resume` lifts that.",
            fleet.describe()
        )?;
    }
    Ok(Outcome::Success)
}
