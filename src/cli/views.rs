//! How the engine's events and reports look: an indicatif view on a terminal, plain lines
//! otherwise, JSON lines under `--log-format json`; the apply summary; the `--wait` countdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;

use tokio::sync::mpsc;

use super::args::{Cli, LogFormat};
use crate::apply::Report;
use crate::cancel::{Cancel, Stop};
use crate::rollout::{Event, HostOutcome};
use crate::transaction::Detail;

/// What the hosts are asked to report besides each result, for what [`apply_events`] shows:
/// on-host steps for a terminal's spinners, a JSON log and `-v`'s plain lines; the output of
/// hooks, health checks and on_change commands with `-v`. Nothing with `-q`.
pub fn detail(cli: &Cli) -> Detail {
    let json = matches!(cli.global.log_format, LogFormat::Json);
    let verbose = cli.global.verbose > 0 && !cli.global.quiet;
    Detail {
        steps: !cli.global.quiet && (verbose || json || std::io::stderr().is_terminal()),
        output: verbose,
    }
}

/// A sender for the engine's events and the task that shows them; it ends when the sender
/// is dropped.
pub fn apply_events(cli: &Cli) -> (mpsc::UnboundedSender<Event>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let json = matches!(cli.global.log_format, LogFormat::Json);
    let terminal = std::io::stderr().is_terminal() && !json;
    let quiet = cli.global.quiet;
    let verbose = cli.global.verbose > 0;
    let task = tokio::spawn(async move {
        let mut waves = WaveCounts::default();
        if quiet {
            // -q: no progress at all; the summary on stdout says how it went.
            while rx.recv().await.is_some() {}
            return;
        }
        if !terminal {
            while let Some(e) = rx.recv().await {
                // On-host steps as plain lines only with -v: one line per step and host.
                if matches!(e, Event::HostRunning { .. }) && !json && !verbose {
                    continue;
                }
                let count = waves.note(&e);
                if json {
                    eprintln!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    match count {
                        Some(c) => eprintln!("{} [{c}]", e.line()),
                        None => eprintln!("{}", e.line()),
                    }
                }
            }
            return;
        }
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let mut bars: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
        while let Some(e) = rx.recv().await {
            match &e {
                Event::HostStep { host, step } | Event::HostRunning { host, step } => {
                    let bar = bars.entry(host.clone()).or_insert_with(|| {
                        let b = multi.add(indicatif::ProgressBar::new_spinner());
                        b.set_style(style.clone());
                        b.set_prefix(host.clone());
                        b.enable_steady_tick(std::time::Duration::from_millis(120));
                        b
                    });
                    bar.set_message(step.clone());
                }
                _ => {
                    if let Some(b) = e.host().and_then(|h| bars.remove(h)) {
                        b.finish_and_clear();
                    }
                    match waves.note(&e) {
                        Some(c) => {
                            let _ = multi.println(format!("{} [{c}]", e.line()));
                        }
                        None => {
                            let _ = multi.println(e.line());
                        }
                    }
                }
            }
        }
        for (_, b) in bars {
            b.finish_and_clear();
        }
    });
    (tx, task)
}

/// Per environment: which wave of how many runs, and how many of its hosts are done, for
/// progress lines such as `wave 2/3: 12/40 done`.
#[derive(Default)]
struct WaveCounts {
    /// env → (waves, current wave, hosts in it, done)
    envs: BTreeMap<String, (usize, usize, usize, usize)>,
}

impl WaveCounts {
    /// Takes `e` into account; for an event that ends a host, the count to show with it.
    fn note(&mut self, e: &Event) -> Option<String> {
        match e {
            Event::EnvironmentStarted { env, waves, .. } => {
                self.envs.insert(env.clone(), (*waves, 0, 0, 0));
                None
            }
            Event::WaveStarted { env, wave, hosts } => {
                let c = self.envs.entry(env.clone()).or_default();
                *c = (c.0.max(*wave), *wave, hosts.len(), 0);
                None
            }
            Event::HostApplied { env, .. }
            | Event::HostFailed { env, .. }
            | Event::HostSkipped { env, .. } => {
                let c = self.envs.get_mut(env)?;
                c.3 += 1;
                Some(format!("wave {}/{}: {}/{} done", c.1, c.0, c.3, c.2))
            }
            _ => None,
        }
    }
}

/// Failed artifact checks, rustc-style, each at the line of `runtimes/<name>.toml` it is
/// about (DESIGN §3), for stderr; the caller adds what they mean for its command.
pub fn artifact_errors(
    failures: &[crate::artifact::ArtifactFailure],
    sources: &crate::diagnostic::Sources,
    color: bool,
) -> String {
    let diagnostics = crate::artifact::ArtifactFailure::diagnostics(failures, sources);
    crate::diagnostic::render_each(&diagnostics, sources, color)
}

/// The summary printed after an apply (DESIGN §6.5): applied, failed, rolled back, skipped,
/// waiting and why.
pub fn apply_summary(r: &Report) -> String {
    let mut out = String::new();
    if !r.artifact_errors.is_empty() {
        let _ = writeln!(
            out,
            "\nApply refused: {} artifact(s) failed their checks; no host was touched.",
            r.artifact_errors.len()
        );
        return out;
    }
    // Every host of the run in exactly one count, and every one not applied on a line of its
    // own with why: the counts add up to the hosts in the run.
    let (mut applied, mut failed, mut rolled_back, mut skipped, mut waiting) = (0, 0, 0, 0, 0);
    let mut lines = Vec::new();
    let esc = crate::text::escape_controls;
    for h in &r.hosts {
        match &h.outcome {
            HostOutcome::Applied { warning } => {
                applied += 1;
                if let Some(w) = warning {
                    lines.push(format!("  {} applied, with a warning: {}", h.host, esc(w)));
                }
            }
            HostOutcome::Failed {
                kind: crate::rollout::FailureKind::RolledBack,
                error,
            } => {
                rolled_back += 1;
                lines.push(format!("  {} rolled back: {}", h.host, esc(error)));
            }
            HostOutcome::Reverted { why } => {
                rolled_back += 1;
                lines.push(format!("  {} rolled back: {}", h.host, esc(why)));
            }
            HostOutcome::Failed { kind, error } => {
                failed += 1;
                let kind = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_default();
                lines.push(format!("  {} failed ({kind}): {}", h.host, esc(error)));
            }
            HostOutcome::Skipped { why, .. } => {
                skipped += 1;
                lines.push(format!("  {} skipped: {}", h.host, esc(why)));
            }
            HostOutcome::Waiting { hold } => {
                waiting += 1;
                // Hosts held by their environment's window or freeze are summed up per
                // environment below; a promotion hold is per host.
                if let crate::rollout::Hold::Promotion { why } = hold {
                    lines.push(format!("  {} waits: {}", h.host, esc(why)));
                }
            }
        }
    }
    let headline = if r.interrupted {
        "interrupted"
    } else if r.outcome == crate::apply::Outcome::Failure {
        "failed"
    } else {
        "complete"
    };
    let _ = writeln!(
        out,
        "\nApply {headline}: {applied} applied, {failed} failed, {rolled_back} rolled back, {skipped} skipped{}.",
        if waiting > 0 {
            format!(", {waiting} waiting")
        } else {
            String::new()
        },
    );
    for w in &r.waits {
        let _ = writeln!(out, "  {} waits: {}", w.environment, w.hold.why());
    }
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    if r.unreachable > 0 {
        let _ = writeln!(
            out,
            "  {} host(s) could not be observed and were not part of the run.",
            r.unreachable
        );
    }
    if r.interrupted {
        let _ = writeln!(
            out,
            "  Interrupted: hosts not started are left as they were; run `flotilla apply` again to continue."
        );
    }
    out
}

/// `--wait`: sleeps, holding no lock and no connection, until `wake` (or a minute when no
/// moment is known: promotion soaks are re-checked), with a countdown. A stop request ends
/// the wait with an error: nothing was changed while waiting.
pub async fn countdown(wake: Option<jiff::Timestamp>, cancel: &Cancel) -> anyhow::Result<()> {
    let wake = wake.unwrap_or_else(|| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60));
    let terminal = std::io::stderr().is_terminal();
    let mut last_line: Option<jiff::Timestamp> = None;
    loop {
        let left = wake.duration_since(jiff::Timestamp::now());
        if left <= jiff::SignedDuration::ZERO {
            if terminal {
                eprintln!();
            }
            return Ok(());
        }
        let text = format!(
            "Waiting until {} ({}); Ctrl-C to stop",
            wake.strftime("%Y-%m-%d %H:%M:%S UTC"),
            crate::schedule::window::format_countdown(left)
        );
        if terminal {
            eprint!("\r{text}   ");
        } else if last_line.is_none_or(|at| jiff::Timestamp::now().duration_since(at).as_secs() >= 60) {
            eprintln!("{text}");
            last_line = Some(jiff::Timestamp::now());
        }
        // The countdown redraws once a second; the sleep itself is one timer per redraw.
        let step = std::time::Duration::from_secs(1).min(left.unsigned_abs());
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = cancel.reached(Stop::Drain) => anyhow::bail!("stopped while waiting; nothing was changed while waiting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Action, Outcome, Wait};
    use crate::rollout::{FailureKind, Hold, HostResult, SkipKind};

    fn host(name: &str, outcome: HostOutcome) -> HostResult {
        HostResult {
            host: name.into(),
            environment: "prod".into(),
            changes: Vec::new(),
            txn: None,
            outcome,
        }
    }

    #[test]
    fn progress_counts_hosts_done_per_wave() {
        let mut w = WaveCounts::default();
        let env = || "prod".to_owned();
        assert_eq!(
            w.note(&Event::EnvironmentStarted {
                env: env(),
                waves: 3,
                hosts: 41
            }),
            None
        );
        w.note(&Event::WaveStarted {
            env: env(),
            wave: 2,
            hosts: vec!["a".into(), "b".into()],
        });
        let applied = Event::HostApplied {
            host: "a".into(),
            env: env(),
            changes: 1,
            warning: None,
        };
        assert_eq!(w.note(&applied).as_deref(), Some("wave 2/3: 1/2 done"));
        let failed = Event::HostFailed {
            host: "b".into(),
            env: env(),
            kind: FailureKind::Connection,
            error: "x".into(),
        };
        assert_eq!(w.note(&failed).as_deref(), Some("wave 2/3: 2/2 done"));
    }

    #[test]
    fn a_failed_apply_says_so_lists_every_host_not_applied_and_its_counts_add_up() {
        let report = Report {
            hosts: vec![
                host("web-01", HostOutcome::Applied { warning: None }),
                host(
                    "web-02",
                    HostOutcome::Failed {
                        kind: FailureKind::RolledBack,
                        error: "health check of app 2.0.0 failed: exit 1".into(),
                    },
                ),
                host(
                    "web-03",
                    HostOutcome::Reverted {
                        why: "the rollout halted; rolled back with it".into(),
                    },
                ),
                host(
                    "web-04",
                    HostOutcome::Failed {
                        kind: FailureKind::Connection,
                        error: "connection reset".into(),
                    },
                ),
                host(
                    "web-05",
                    HostOutcome::Skipped {
                        kind: SkipKind::Halted,
                        why: "the rollout of prod halted at wave 2".into(),
                    },
                ),
                host(
                    "web-06",
                    HostOutcome::Waiting {
                        hold: Hold::Promotion {
                            why: "app 2.0.0 waits on staging".into(),
                        },
                    },
                ),
            ],
            waits: vec![Wait {
                environment: "eu".into(),
                hold: Hold::Schedule {
                    why: "window closed; opens Sat 02:00 UTC".into(),
                    until: None,
                },
            }],
            halts: Vec::new(),
            artifact_errors: Vec::new(),
            unreachable: 1,
            interrupted: false,
            next: Action::default(),
            outcome: Outcome::Failure,
        };
        let text = apply_summary(&report);
        insta::assert_snapshot!(text);
        assert!(text.contains("Apply failed: 1 applied, 1 failed, 2 rolled back, 1 skipped, 1 waiting."));
        for h in ["web-02", "web-03", "web-04", "web-05", "web-06"] {
            assert!(text.contains(&format!("  {h} ")), "{h} missing:\n{text}");
        }
    }
}
