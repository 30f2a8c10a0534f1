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

/// A sender for the engine's events and the task that shows them; it ends when the sender
/// is dropped.
pub fn apply_events(cli: &Cli) -> (mpsc::UnboundedSender<Event>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let json = matches!(cli.global.log_format, LogFormat::Json);
    let terminal = std::io::stderr().is_terminal() && !json;
    let task = tokio::spawn(async move {
        if !terminal {
            while let Some(e) = rx.recv().await {
                if json {
                    eprintln!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    eprintln!("{}", e.line());
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
                Event::HostStep { host, step } => {
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
                    let _ = multi.println(e.line());
                }
            }
        }
        for (_, b) in bars {
            b.finish_and_clear();
        }
    });
    (tx, task)
}

/// The summary printed after an apply (DESIGN §6.5): applied, failed, rolled back, skipped,
/// waiting and why.
pub fn apply_summary(r: &Report) -> String {
    let mut out = String::new();
    if !r.artifact_errors.is_empty() {
        for e in &r.artifact_errors {
            eprintln!("error: {e}");
        }
        let _ = writeln!(
            out,
            "\nApply refused: {} artifact(s) failed their checks; no host was touched.",
            r.artifact_errors.len()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\nApply {}: {} applied, {} failed, {} rolled back, {} skipped{}.",
        if r.interrupted { "interrupted" } else { "complete" },
        r.applied(),
        r.failed(),
        r.rolled_back(),
        r.skipped(),
        if r.waits.is_empty() {
            String::new()
        } else {
            format!(", {} environment(s) waiting", r.waits.len())
        },
    );
    for w in &r.waits {
        let _ = writeln!(out, "  {} waits: {}", w.environment, w.hold.why());
    }
    for h in &r.hosts {
        match &h.outcome {
            HostOutcome::Waiting {
                hold: crate::rollout::Hold::Promotion { why },
            } => {
                let _ = writeln!(out, "  {} waits: {}", h.host, crate::text::escape_controls(why));
            }
            HostOutcome::Skipped { why, .. } => {
                let _ = writeln!(out, "  {} skipped: {}", h.host, crate::text::escape_controls(why));
            }
            _ => {}
        }
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
