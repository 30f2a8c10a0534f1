//! `flotilla store copy`: a directory store moved into PostgreSQL (DESIGN §7), same id.

use anyhow::Context as _;

use super::Outcome;
use super::args::StoreCommand;
use super::output::outln;
use crate::store::Holder;

pub fn store(command: &StoreCommand) -> anyhow::Result<Outcome> {
    match command {
        StoreCommand::Copy(args) => {
            let holder = Holder::this_process("flotilla store copy", jiff::Timestamp::now());
            let (id, s) = crate::store::copy_dir_to_postgres(&args.from, &args.to, &holder)
                .with_context(|| format!("copying {} into {}", args.from.display(), redacted(&args.to)))?;
            let to = redacted(&args.to);
            outln!(
                "Copied store {} from {} into {to}: epoch {}, {} audit events, {} rollouts, {} promotion records, {} pauses, {} approvals, {} observations.",
                id,
                args.from.display(),
                s.epoch,
                s.audit_events,
                s.rollouts,
                s.promotions,
                s.pauses,
                s.approvals,
                s.observations
            )?;
            outln!(
                "Use it with --state {to} (or FLOTILLA_STATE); the directory is left as it was, and should no longer be used."
            )?;
            Ok(Outcome::Success)
        }
    }
}

/// The URL as messages show it (no password), or as given when it does not parse (the copy
/// reports why).
fn redacted(url: &str) -> String {
    crate::store::Location::parse_url(url).map_or_else(|_| url.to_owned(), |l| l.to_string())
}
