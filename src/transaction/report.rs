//! What a host transaction reported: its result line, steps and the tail of its log, parsed
//! and bounded (the tail reaches terminals and the audit log).

use std::fmt::Write as _;

use super::{Outcome, TxnError};

/// What the host said, plus the last steps and log lines for error messages.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub steps: Vec<String>,
    pub log_tail: Vec<String>,
}

pub(super) fn parse_report(host: &str, stdout: &[u8]) -> Result<Report, TxnError> {
    let text = crate::text::sanitize(&String::from_utf8_lossy(stdout));
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let result = first
        .strip_prefix("flotilla-txn ")
        .ok_or_else(|| TxnError::Host {
            host: host.to_owned(),
            what: format!("unexpected output from the transaction: {first:?}"),
        })?;
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
    let mut section = 0;
    for l in lines {
        match l {
            "flotilla-steps" => section = 1,
            "flotilla-log" => section = 2,
            _ if section == 1 => steps.push(l.to_owned()),
            _ if section == 2 => log_tail.push(l.to_owned()),
            _ => {}
        }
    }
    Ok(Report {
        outcome,
        steps,
        log_tail: bound_log_tail(log_tail),
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
