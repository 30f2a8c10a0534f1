//! `flotilla preview`: parses the flags, calls [`crate::preview`], prints the chosen format.

use super::Outcome;
use super::args::{AgainstArg, Cli, Format, PreviewArgs};
use super::output::out;
use crate::preview::{self, Against};

pub async fn preview(cli: &Cli, args: &PreviewArgs, color: bool) -> anyhow::Result<Outcome> {
    let at = match &args.at {
        Some(s) => Some(super::commands::parse_at(s)?),
        None => None,
    };
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let store = |fleet: &str| -> Result<_, preview::PreviewError> {
        let location = super::apply::store_location(cli, fleet)
            .map_err(|e| preview::PreviewError::NoStore(format!("{e:#}")))?;
        Ok(crate::store::open_existing(&location)?)
    };
    let req = preview::Request {
        fleet_dir: &args.fleet_dir,
        base: &args.base,
        head: &args.head,
        against: match args.against {
            AgainstArg::Manifests => Against::Manifests,
            AgainstArg::Fleet => Against::Fleet,
        },
        at,
        clock: crate::clock::Clock::wall(),
        store: &store,
        parallel: cli.global.parallel as usize,
        identity_file: path(&args.connection.identity_file),
        known_hosts: path(&args.connection.known_hosts),
        pinned_keys: super::apply::pinned_keys(cli)?,
    };
    let p = preview::preview(&req).await?;
    match args.format {
        Format::Markdown => out(&preview::render::markdown(&p))?,
        Format::Text => out(&preview::render::text(&p, color))?,
        Format::Json => out(&(preview::render::json(&p) + "\n"))?,
    }
    Ok(if p.errors.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}
