//! `flotilla store copy`: a directory store moved into PostgreSQL (DESIGN §7), same id.

use anyhow::Context as _;

use super::Outcome;
use super::args::StoreCommand;
use super::output::outln;
use crate::store::{DirStore, Holder, PgStore, PgUrl, Store as _};

pub fn store(command: &StoreCommand) -> anyhow::Result<Outcome> {
    match command {
        StoreCommand::Copy(args) => {
            if !args.from.join("id").is_file() {
                anyhow::bail!(
                    "{}: not a Flotilla store (it has no `id` file); --from takes a store directory such as ~/.local/state/flotilla/FLEET",
                    args.from.display()
                );
            }
            let from = DirStore::open(&args.from)?;
            let to = PgUrl::parse(&args.to)?;
            let holder = Holder::this_process("flotilla store copy", jiff::Timestamp::now());
            let s = PgStore::copy_from_dir(&from, &to, &holder)
                .with_context(|| format!("copying {} into {to}", args.from.display()))?;
            outln!(
                "Copied store {} from {} into {to}: epoch {}, {} audit events, {} rollouts, {} promotion records, {} pauses, {} approvals, {} observations.",
                from.id(),
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
