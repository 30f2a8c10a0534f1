//! What a host transaction reported: the steps it streamed while it ran, its result line,
//! steps, the end of each command's output (-v) and the tail of its log, parsed and bounded
//! (all of it reaches terminals and the audit log).

use std::fmt::Write as _;

use serde::Serialize;

use super::{Outcome, TxnError};

/// What the host said, plus the last steps and log lines for error messages.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub steps: Vec<String>,
    pub log_tail: Vec<String>,
    /// With [`super::Detail::output`] (`-v`): the end of each hook's, health check's and
    /// on_change's output, in the order they ran; never a sensitive file's on_change.
    pub outputs: Vec<CommandOutput>,
}

/// The last lines of one command's output on a host, sanitized and bounded like the log's
/// tail (20 lines, 4 KiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutput {
    /// What ran: `health check of app 2.0.0`, `on_change /etc/app.conf`, `activate hook of
    /// app 2.0.0`, …
    pub label: String,
    pub lines: Vec<String>,
}

/// At most this many commands' outputs are kept from one report: a host decides how many it
/// sends.
const MAX_OUTPUTS: usize = 256;
/// At most this many streamed steps become progress, each at most `MAX_STEP_BYTES` long.
const MAX_STREAMED: usize = 10_000;
const MAX_STEP_BYTES: usize = 1024;

/// Turns a transaction's stdout, as it arrives, into the on-host steps it streams before its
/// result line (launch.sh with FLOTILLA_STEPS): each whole line, sanitized and bounded, goes to
/// `progress` at once.
pub(super) struct StepStream<'p> {
    partial: Vec<u8>,
    /// The result line arrived (or the bound was reached): nothing more is a step.
    done: bool,
    sent: usize,
    progress: &'p (dyn Fn(&str) + Send + Sync),
}

impl<'p> StepStream<'p> {
    pub(super) fn new(progress: &'p (dyn Fn(&str) + Send + Sync)) -> StepStream<'p> {
        StepStream {
            partial: Vec::new(),
            done: false,
            sent: 0,
            progress,
        }
    }

    pub(super) fn feed(&mut self, mut chunk: &[u8]) {
        while !self.done && !chunk.is_empty() {
            let Some(end) = chunk.iter().position(|b| *b == b'\n') else {
                // The rest of a line to come; an over-long one is cut, not buffered.
                let room = MAX_STEP_BYTES.saturating_sub(self.partial.len());
                self.partial.extend_from_slice(&chunk[..chunk.len().min(room)]);
                return;
            };
            let room = MAX_STEP_BYTES.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&chunk[..end.min(room)]);
            chunk = &chunk[end + 1..];
            let line = crate::text::sanitize(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
            if line.starts_with("flotilla-txn ") || self.sent >= MAX_STREAMED {
                self.done = true;
            } else if !line.trim().is_empty() {
                self.sent += 1;
                (self.progress)(&line);
            }
        }
    }
}

pub(super) fn parse_report(host: &str, stdout: &[u8]) -> Result<Report, TxnError> {
    let text = crate::text::sanitize(&String::from_utf8_lossy(stdout));
    // Streamed steps (and the newline that ends them) come before the result line; they are
    // in the steps list below as well.
    let mut lines = text.lines().skip_while(|l| !l.starts_with("flotilla-txn "));
    let Some(first) = lines.next() else {
        // Nothing, garbage, or streamed steps and then a lost connection.
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let last: String = last.chars().take(MAX_STEP_BYTES).collect();
        return Err(TxnError::Host {
            host: host.to_owned(),
            what: format!(
                "no result from the transaction (its last line of output: {last:?}); a transaction that started finishes or rolls back on the host by itself, and the next plan shows where it ended"
            ),
        });
    };
    let result = first.strip_prefix("flotilla-txn ").unwrap_or(first);
    let (kind, rest) = result.split_once(' ').unwrap_or((result, ""));
    let rest = rest.to_owned();
    let outcome = match kind {
        "ok" => Outcome::Applied,
        "committed-with-errors" => Outcome::AppliedWithErrors(rest),
        "stale" => Outcome::Stale(rest),
        "locked" => Outcome::Locked(rest),
        "rolled-back" => Outcome::RolledBack(rest),
        "broken" => Outcome::Broken(rest),
        "unhealthy" => Outcome::Unhealthy(rest),
        _ => {
            return Err(TxnError::Host {
                host: host.to_owned(),
                what: result.to_owned(),
            });
        }
    };
    let (mut steps, mut log_tail) = (Vec::new(), Vec::new());
    let mut outputs: Vec<CommandOutput> = Vec::new();
    let mut section = 0;
    for l in lines {
        match l {
            "flotilla-steps" => section = 1,
            "flotilla-log" => section = 2,
            "flotilla-output" => section = 3,
            _ if section == 1 => steps.push(l.to_owned()),
            _ if section == 2 => log_tail.push(l.to_owned()),
            // Every line of this section is prefixed by launch.sh: "=" a command's label, "|"
            // a line of its output. Nothing a command prints can pass for a label.
            _ if section == 3 => {
                if let Some(label) = l.strip_prefix('=') {
                    if outputs.len() >= MAX_OUTPUTS {
                        section = 0;
                        continue;
                    }
                    outputs.push(CommandOutput {
                        label: label.chars().take(MAX_STEP_BYTES).collect(),
                        lines: Vec::new(),
                    });
                } else if let (Some(line), Some(o)) = (l.strip_prefix('|'), outputs.last_mut()) {
                    o.lines.push(line.to_owned());
                    // Bounded as it grows, so a long output never piles up here.
                    if o.lines.len() > 2 * LOG_TAIL_LINES {
                        o.lines = bound_log_tail(std::mem::take(&mut o.lines));
                    }
                }
            }
            _ => {}
        }
    }
    for o in &mut outputs {
        o.lines = bound_log_tail(std::mem::take(&mut o.lines));
    }
    steps.retain(|s| !s.trim().is_empty());
    Ok(Report {
        outcome,
        steps,
        log_tail: bound_log_tail(log_tail),
        outputs,
    })
}

/// At most this many of the log's last lines, and bytes, reach messages and the audit log: hook
/// output may hold secrets printed early, and a host decides how long its lines are.
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_BYTES: usize = 4096;

fn bound_log_tail(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > LOG_TAIL_LINES {
        lines.drain(..lines.len() - LOG_TAIL_LINES);
    }
    let mut budget = LOG_TAIL_BYTES;
    let mut kept = Vec::new();
    for l in lines.into_iter().rev() {
        if budget == 0 {
            break;
        }
        if l.len() <= budget {
            budget -= l.len();
            kept.push(l);
        } else {
            // The end of an over-long line, cut at a character boundary.
            let mut start = l.len() - budget;
            while !l.is_char_boundary(start) {
                start += 1;
            }
            kept.push(format!("…{}", &l[start..]));
            budget = 0;
        }
    }
    kept.reverse();
    kept
}

/// Summarises a report's failure for messages: the reason and the last log lines.
pub fn describe_failure(r: &Report) -> String {
    let mut out = match &r.outcome {
        Outcome::Applied => "applied".to_owned(),
        Outcome::AppliedWithErrors(w) => format!("applied, but {w}"),
        Outcome::Stale(w) => format!("stale: {w}; left untouched (plan again)"),
        Outcome::Locked(w) => format!("locked: {w}; left untouched"),
        Outcome::RolledBack(w) => format!("failed and rolled back: {w}"),
        Outcome::Broken(w) => format!("BROKEN: {w}"),
        Outcome::Unhealthy(w) => format!("unhealthy: {w}"),
    };
    if r.outcome.failed() && !r.log_tail.is_empty() {
        let tail: Vec<&str> = r.log_tail.iter().rev().take(3).map(String::as_str).collect();
        let _ = write!(
            out,
            " [log: {}]",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(chunks: &[&[u8]]) -> Vec<String> {
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |s: &str| seen.lock().unwrap().push(s.to_owned());
        let mut stream = StepStream::new(&progress);
        for c in chunks {
            stream.feed(c);
        }
        seen.into_inner().unwrap()
    }

    #[test]
    fn streamed_steps_are_whole_sanitized_lines_up_to_the_result() {
        let steps = streamed(&[
            b"install app 2.0",
            b".0\nfile /etc/a\x1b[2J.conf\n\nhealth",
            b" app 2.0.0\nflotilla-txn ok\nflotilla-steps\ninstall app 2.0.0\n",
        ]);
        assert_eq!(
            steps,
            ["install app 2.0.0", "file /etc/a[2J.conf", "health app 2.0.0"]
        );
    }

    #[test]
    fn an_endless_step_line_is_cut_not_buffered() {
        let long = vec![b'x'; 100 * MAX_STEP_BYTES];
        let steps = streamed(&[&long, &long, b"\nnext\n"]);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].len(), MAX_STEP_BYTES);
        assert_eq!(steps[1], "next");
    }

    #[test]
    fn streamed_steps_before_the_result_leave_the_report_as_it_was() {
        let out = b"install app 2.0.0\nhealth app 2.0.0\n\nflotilla-txn ok\nflotilla-steps\ninstall app 2.0.0\nhealth app 2.0.0\ncommit\n";
        let r = parse_report("h1", out).unwrap();
        assert_eq!(r.outcome, Outcome::Applied);
        assert_eq!(r.steps, ["install app 2.0.0", "health app 2.0.0", "commit"]);
        assert!(r.outputs.is_empty());
    }

    #[test]
    fn a_lost_result_after_streamed_steps_names_the_last_step() {
        let e = parse_report("h1", b"install app 2.0.0\nhealth app 2.0.0\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("host h1: no result from the transaction"),
            "{msg}"
        );
        assert!(msg.contains("health app 2.0.0"), "{msg}");
    }

    #[test]
    fn command_outputs_are_labelled_bounded_and_cannot_forge_a_label_or_section() {
        let mut out = b"flotilla-txn ok\nflotilla-steps\ncommit\nflotilla-output\n=health check of app 2.0.0\n|ok\n|=forged label\n|flotilla-log\n=on_change /etc/a.conf\n".to_vec();
        for i in 0..100 {
            out.extend_from_slice(format!("|line {i}\n").as_bytes());
        }
        let r = parse_report("h1", &out).unwrap();
        assert!(r.log_tail.is_empty());
        assert_eq!(r.outputs.len(), 2);
        assert_eq!(r.outputs[0].label, "health check of app 2.0.0");
        assert_eq!(r.outputs[0].lines, ["ok", "=forged label", "flotilla-log"]);
        assert_eq!(r.outputs[1].label, "on_change /etc/a.conf");
        assert_eq!(r.outputs[1].lines.len(), LOG_TAIL_LINES);
        assert_eq!(r.outputs[1].lines.last().unwrap(), "line 99");
        assert_eq!(r.outputs[1].lines[0], "line 80");
    }

    #[test]
    fn a_command_output_keeps_at_most_4_kib() {
        let mut out = b"flotilla-txn ok\nflotilla-output\n=activate hook of app 2.0.0\n".to_vec();
        for _ in 0..3 {
            out.push(b'|');
            out.extend_from_slice(&[b'y'; 3000]);
            out.push(b'\n');
        }
        let r = parse_report("h1", &out).unwrap();
        let kept: usize = r.outputs[0].lines.iter().map(String::len).sum();
        assert!(kept <= LOG_TAIL_BYTES + "…".len(), "{kept}");
    }
}
