//! `flotilla pause` and `flotilla resume` as store operations (DESIGN §10): the pause record and
//! its audit line, written together, without the apply lock (a running apply or `watch` reads
//! the pauses before every host start).

use super::{AuditEvent, Pause, Store, StoreError};

/// Pauses `environment` (`None`: the whole fleet) and audits it; returns the pause written.
/// The reason is stripped of control characters: it is shown by plan, status and watch.
pub fn pause(
    store: &dyn Store,
    environment: Option<&str>,
    reason: &str,
    actor: &str,
    now: jiff::Timestamp,
) -> Result<Pause, StoreError> {
    let pause = Pause {
        environment: environment.map(str::to_owned),
        reason: crate::text::sanitize(reason),
        actor: actor.to_owned(),
        since: now,
    };
    store.pause(&pause)?;
    let mut e = AuditEvent::new(now, actor, "pause");
    e.environment = pause.environment.clone();
    e.reason = Some(pause.reason.clone());
    store.append_audit(&e)?;
    Ok(pause)
}

/// What `resume` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// The pause lifted; `None` when that scope was not paused.
    pub lifted: Option<Pause>,
    /// A fleet-wide pause that still holds the environment resumed.
    pub fleet_still_paused: Option<Pause>,
}

/// Lifts the pause of `environment` (`None`: the fleet-wide one) and audits it.
pub fn resume(
    store: &dyn Store,
    environment: Option<&str>,
    actor: &str,
    now: jiff::Timestamp,
) -> Result<Resumed, StoreError> {
    let lifted = store.resume(environment)?;
    if let Some(l) = &lifted {
        let mut e = AuditEvent::new(now, actor, "resume");
        e.environment = environment.map(str::to_owned);
        e.reason = Some(l.describe());
        store.append_audit(&e)?;
    }
    let fleet_still_paused = match environment {
        Some(_) => store.pauses()?.into_iter().find(|p| p.environment.is_none()),
        None => None,
    };
    Ok(Resumed {
        lifted,
        fleet_still_paused,
    })
}
