//! The plain data a store keeps and hands out: approvals, pauses, the lock's holder, audit
//! events, rollout records, observations.

use super::*;

/// What a person applied of an environment's guarded settings: `[trust]`, connection settings
/// and commands (hooks, `on_change`, health checks), each as a digest. `watch` applies an
/// environment unattended only while its digests are the ones a person applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub trust: String,
    pub connection: String,
    pub commands: String,
    #[serde(default)]
    pub revision: Option<String>,
    pub actor: String,
    pub at: jiff::Timestamp,
}

/// A pause (DESIGN §10): no host change starts in its scope, by `apply` or `watch`, until
/// someone resumes it. In-flight hosts finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// The paused environment; `None` pauses the whole fleet.
    #[serde(default)]
    pub environment: Option<String>,
    /// Why, as the person gave it.
    pub reason: String,
    /// Who paused (`user@machine`).
    pub actor: String,
    pub since: jiff::Timestamp,
}

impl Pause {
    /// The pause that holds `env`, if any: its own, else the fleet-wide one.
    pub fn holding<'a>(pauses: &'a [Pause], env: &str) -> Option<&'a Pause> {
        pauses
            .iter()
            .find(|p| p.environment.as_deref() == Some(env))
            .or_else(|| pauses.iter().find(|p| p.environment.is_none()))
    }

    /// "INC-42 (alice@ops1, since 2026-12-01 09:00 UTC)", or with the scope for fleet-wide.
    pub fn describe(&self) -> String {
        let scope = match &self.environment {
            Some(_) => "",
            None => "the whole fleet, ",
        };
        format!(
            "{} ({scope}by {}, since {})",
            self.reason,
            self.actor,
            self.since.strftime("%Y-%m-%d %H:%M UTC")
        )
    }
}

/// Puts `pause` in place of its scope's pause, keeping the order [`Store::pauses`] promises.
pub(crate) fn set_pause(pauses: &mut Vec<Pause>, pause: Pause) {
    pauses.retain(|p| p.environment != pause.environment);
    pauses.push(pause);
    pauses.sort_by(|a, b| a.environment.cmp(&b.environment));
}

/// Removes and returns the pause of `environment`'s scope.
pub(crate) fn take_pause(pauses: &mut Vec<Pause>, environment: Option<&str>) -> Option<Pause> {
    let i = pauses
        .iter()
        .position(|p| p.environment.as_deref() == environment)?;
    Some(pauses.remove(i))
}

/// Who holds (or held) the apply lock, shown to whoever is refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub machine: String,
    pub user: String,
    pub since: jiff::Timestamp,
    pub command: String,
}

impl Holder {
    /// The holder for this process: its pid, the host name and the user from the environment
    /// (`USER`, else `LOGNAME`), `command` as given (e.g. "flotilla apply") and `since`.
    pub fn this_process(command: &str, since: jiff::Timestamp) -> Holder {
        let machine = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unknown-host".to_owned());
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unknown-user".to_owned());
        Holder {
            pid: std::process::id(),
            machine,
            user,
            since,
            command: command.to_owned(),
        }
    }
}

impl fmt::Display for Holder {
    /// `pid 1234 (alice@build-01, `flotilla apply`, since 2026-11-22T07:40:00Z)`: enough to find
    /// the process and its owner.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} ({}@{}, `{}`, since {:.0})",
            self.pid, self.user, self.machine, self.command, self.since
        )
    }
}

/// One line of the audit log (DESIGN §7). The field names are a contract: `flotilla history
/// --json` prints them and users' scripts read them. Every field is always written (absent
/// values as `null`) so the shape of a line never depends on the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: jiff::Timestamp,
    /// Who caused the event: a user for `apply`, `watch` for the reconciler.
    pub actor: String,
    /// The full commit id applied; `None` for a working tree outside Git.
    #[serde(default)]
    pub revision: Option<String>,
    /// The working tree had uncommitted changes (`apply --allow-dirty`).
    #[serde(default)]
    pub dirty: bool,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// What happened: "apply-started", "host-applied", "host-failed", "rolled-back",
    /// "apply-finished", "take-over", "override", ...
    pub event: String,
    /// The changes involved, in the plan's JSON form.
    #[serde(default)]
    pub changes: Vec<serde_json::Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// The reason a person gave (`--take-over`, `--override-windows`, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

impl AuditEvent {
    /// An event with only the mandatory fields set; fill in the rest with struct update syntax
    /// or field assignment.
    pub fn new(time: jiff::Timestamp, actor: &str, event: &str) -> AuditEvent {
        AuditEvent {
            time,
            actor: actor.to_owned(),
            revision: None,
            dirty: false,
            environment: None,
            host: None,
            event: event.to_owned(),
            changes: Vec::new(),
            error: None,
            reason: None,
        }
    }

    /// Whether the event passes `filter`'s host and environment conditions (not its limit).
    pub fn matches(&self, filter: &AuditFilter) -> bool {
        let host_ok = filter.host.as_ref().is_none_or(|h| self.host.as_ref() == Some(h));
        let env_ok = filter
            .env
            .as_ref()
            .is_none_or(|e| self.environment.as_ref() == Some(e));
        host_ok && env_ok
    }
}

/// Which audit events to return (`flotilla history --host --env --limit`). An event without a
/// host (such as "apply-started") does not match a host filter; likewise for environments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub host: Option<String>,
    pub env: Option<String>,
    /// Keep only the newest N matching events.
    pub limit: Option<usize>,
}

/// An environment's rollout as stored when it starts and updated after each wave (DESIGN
/// §6.2): the wave layout is kept on resume, so it is stored rather than recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The revision being rolled out.
    #[serde(default)]
    pub revision: Option<String>,
    /// A digest of the environment's desired state: what makes a rollout one rollout. A
    /// later commit that leaves it unchanged continues (and stays halted with) this one.
    #[serde(default)]
    pub desired: Option<String>,
    /// The hosts of each wave, the canary wave first.
    pub waves: Vec<Vec<String>>,
    /// How many waves have completed.
    pub waves_done: usize,
    /// The next wave may not start before this (the `bake` after the last completed wave).
    #[serde(default)]
    pub bake_deadline: Option<jiff::Timestamp>,
    /// Why the rollout halted, if it did; `watch` does not retry a halted rollout.
    #[serde(default)]
    pub halted: Option<String>,
    /// The wave during or after which it halted (0: before the first wave).
    #[serde(default)]
    pub halted_wave: Option<usize>,
    /// When it halted.
    #[serde(default)]
    pub halted_at: Option<jiff::Timestamp>,
    pub started_at: jiff::Timestamp,
    /// When it completed (every wave done); `min_interval` counts from it.
    #[serde(default)]
    pub ended_at: Option<jiff::Timestamp>,
    /// Every host this rollout changed so far, recorded as it happened: a later run of the
    /// same rollout re-checks them after bakes and rolls them back if it halts.
    #[serde(default)]
    pub changed: Vec<ChangedHost>,
}

impl RolloutRecord {
    /// What identifies the rollout: the digest of the desired state it moves to.
    pub fn identity(&self) -> Option<&str> {
        self.desired.as_deref()
    }
}

/// Merges hosts appended after a rollout record was saved into its `changed` list: one entry
/// per host, the last appended winning, in the order hosts were first changed.
pub(crate) fn merge_changed(record: &mut RolloutRecord, appended: impl IntoIterator<Item = ChangedHost>) {
    for c in appended {
        match record.changed.iter_mut().find(|e| e.host == c.host) {
            Some(e) => *e = c,
            None => record.changed.push(c),
        }
    }
}

/// A host a rollout changed, and the transaction that did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedHost {
    pub host: String,
    pub wave: usize,
    pub txn: String,
}

/// The last observation of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub host: String,
    pub fingerprint: String,
    pub at: jiff::Timestamp,
}
