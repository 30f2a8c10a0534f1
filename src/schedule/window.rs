//! Maintenance windows and freezes: whether an environment may start a change at a given
//! instant, until when, or when it next may, and how to say so in a plan. Pure: the instant
//! is always an argument, the clock is never read.
//!
//! Windows are written in local wall-clock time of their own zone (DESIGN 6.4), so every
//! occurrence is resolved separately for its date: a start or end that falls into a
//! spring-forward gap moves forward, one in a fall-back fold takes the earlier instant, and a
//! `duration` is elapsed time from the resolved start. Occurrences of all windows are merged
//! (touching ones chain into one open period) and freezes are cut out of the result.

use std::fmt;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// How far before `now` (in local days) occurrences are enumerated: one more than the longest
/// allowed window, so an occurrence that started a week ago and still runs is seen.
const LOOKBACK_DAYS: i64 = 8;

/// How far past `now` and past the last freeze occurrences are enumerated. Two weeks and a day
/// cover every weekday twice after any freeze, so a window that opens at all is found.
const HORIZON: SignedDuration = SignedDuration::from_hours(15 * 24);

/// The longest window [`window_length_ok`] accepts.
const MAX_LENGTH: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Beyond this, a closing time is shown with its weekday and date, since the bare clock time
/// would be ambiguous within the week.
const SHOW_DATE_AFTER: SignedDuration = SignedDuration::from_hours(6 * 24);

/// A recurring period in which changes may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The local days on which the window *starts*; `None` means every day. A window that
    /// crosses midnight stays open into the following day even if that day is not listed.
    pub days: Option<Vec<Weekday>>,
    /// Local wall-clock start.
    pub start: Time,
    pub length: WindowLength,
    pub timezone: TimeZone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowLength {
    /// Elapsed time from the resolved start: a "3h" window is three real hours even when the
    /// clocks change inside it.
    Duration(SignedDuration),
    /// Local wall-clock end. An end at or before `start` is on the next day, so `end == start`
    /// is a window of one whole day.
    End(Time),
}

/// A period in which no change may start, whatever the windows say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    /// Inclusive.
    pub from: Timestamp,
    /// Exclusive.
    pub until: Timestamp,
    pub reason: String,
}

/// Result of evaluating an environment's windows and freezes at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// A change may start now: the window condition holds and no freeze covers `now`.
    pub open: bool,
    /// The window condition alone: there are no windows, or one of them is open. Freezes are
    /// not considered, so this can be true while `open` is false.
    pub window_open: bool,
    /// Only when `open`: the end of the connected open period, i.e. the end of the chained
    /// windows or the start of the next freeze, whichever comes first. `None` when nothing
    /// closes it within the horizon (no windows and no freeze ahead, or windows that chain
    /// for more than 15 days).
    pub closes_at: Option<Timestamp>,
    /// Only when not `open`: the next instant at which a change may start. `None` when none
    /// was found within the horizon, which in practice means never (e.g. an empty `days`).
    pub next_open: Option<Timestamp>,
    /// Index into the freezes of the first freeze that covers `now`.
    pub freeze: Option<usize>,
}

/// Why a window's length is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowLengthError {
    /// A zero or negative duration: the window would never be open.
    NotPositive,
    /// Longer than one week: occurrences would overlap themselves, and [`availability`] only
    /// looks a week back for an occurrence that is still running.
    LongerThanWeek,
}

impl fmt::Display for WindowLengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowLengthError::NotPositive => f.write_str("duration must be more than zero"),
            WindowLengthError::LongerThanWeek => f.write_str("duration must be at most 7 days"),
        }
    }
}

impl std::error::Error for WindowLengthError {}

/// Validation uses this so that [`availability`]'s one-week lookback is always enough. An
/// `end` time is never rejected: it gives at most a day (25 hours across a fall-back).
pub fn window_length_ok(w: &Window) -> Result<(), WindowLengthError> {
    match w.length {
        WindowLength::Duration(d) if d <= SignedDuration::ZERO => Err(WindowLengthError::NotPositive),
        WindowLength::Duration(d) if d > MAX_LENGTH => Err(WindowLengthError::LongerThanWeek),
        WindowLength::Duration(_) | WindowLength::End(_) => Ok(()),
    }
}

/// Evaluates windows and freezes at `now`. Windows should have passed [`window_length_ok`];
/// longer ones are still evaluated, but an occurrence that started more than a week before
/// `now` is not seen.
pub fn availability(windows: &[Window], freezes: &[Freeze], now: Timestamp) -> Availability {
    let horizon = horizon(freezes, now);
    let merged = merge(
        windows
            .iter()
            .flat_map(|w| occurrences(w, now, horizon))
            .collect(),
    );
    let window_open = windows.is_empty() || merged.iter().any(|p| p.contains(now));
    let open_set = open_periods(windows.is_empty(), merged, freezes);
    let freeze = freezes.iter().position(|f| f.from <= now && now < f.until);
    let open = window_open && freeze.is_none();
    let closes_at = if open {
        open_set
            .iter()
            .find(|p| p.contains(now))
            .and_then(|p| (p.end <= horizon && p.end != Timestamp::MAX).then_some(p.end))
    } else {
        None
    };
    let next_open = if open {
        None
    } else {
        open_set.iter().find(|p| p.start > now).map(|p| p.start)
    };
    Availability {
        open,
        window_open,
        closes_at,
        next_open,
        freeze,
    }
}

/// One line for plan output, e.g. `window closed; opens Sat 2026-11-28 02:00 CET (in 5d
/// 20h)`. `a` must be [`availability`]`(windows, freezes, now)`. Times are shown in the zone
/// of the window concerned, freezes in UTC.
pub fn describe(windows: &[Window], freezes: &[Freeze], a: &Availability, now: Timestamp) -> String {
    if a.open {
        let lead = if windows.is_empty() {
            "no window (any time)".to_owned()
        } else {
            "window open".to_owned()
        };
        let Some(closes) = a.closes_at else {
            return if windows.is_empty() {
                lead
            } else {
                format!("{lead} (no close within 15 days)")
            };
        };
        if let Some(w) = closing_window(windows, closes) {
            let fmt = if closes.duration_since(now) > SHOW_DATE_AFTER {
                "%a %Y-%m-%d %H:%M %Z"
            } else {
                "%H:%M %Z"
            };
            return format!("{lead} until {}", show(closes, &w.timezone, fmt));
        }
        let reason = freezes
            .iter()
            .find(|f| f.from == closes)
            .map_or_else(String::new, |f| parenthesised(&f.reason));
        return format!("{lead} until {}, then frozen{reason}", show_utc(closes));
    }

    let state = match a.freeze.and_then(|i| freezes.get(i)) {
        Some(f) => format!("frozen until {}{}", show_utc(f.until), parenthesised(&f.reason)),
        None => "window closed".to_owned(),
    };
    match a.next_open {
        Some(t) => {
            let tz = opening_window(windows, t).map_or(TimeZone::UTC, |w| w.timezone.clone());
            format!(
                "{state}; opens {} ({})",
                show(t, &tz, "%a %Y-%m-%d %H:%M %Z"),
                format_countdown(t.duration_since(now))
            )
        }
        None => format!("{state}; never opens"),
    }
}

/// `t` as a person reads it for an environment: weekday, date and time in the zone of the
/// window open at `t` (UTC without windows), e.g. `Sat 2026-11-28 02:00 CET`.
pub fn show_local(windows: &[Window], t: Timestamp) -> String {
    let tz = opening_window(windows, t).map_or(TimeZone::UTC, |w| w.timezone.clone());
    show(t, &tz, "%a %Y-%m-%d %H:%M %Z")
}

/// A countdown for people: the two most significant of days, hours, minutes and seconds,
/// rounded down, a zero second unit left out ("in 5d 20h", "in 3h", "in 45s"). Negative
/// durations read "5m ago".
pub fn format_countdown(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut text = String::new();
    if let Some(first) = units.iter().position(|&(size, _)| secs >= size) {
        let (size, unit) = units[first];
        text = format!("{}{unit}", secs / size);
        if let Some(&(next, next_unit)) = units.get(first + 1) {
            let rest = secs % size / next;
            if rest > 0 {
                text = format!("{text} {rest}{next_unit}");
            }
        }
    } else {
        text.push_str("0s");
    }
    if d.is_negative() {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A half-open interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    start: Timestamp,
    end: Timestamp,
}

impl Period {
    fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Occurrences are enumerated up to here; anything beyond is not known exactly.
fn horizon(freezes: &[Freeze], now: Timestamp) -> Timestamp {
    let latest = freezes.iter().map(|f| f.until).fold(now, Timestamp::max);
    add(latest, HORIZON)
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Resolves a local wall-clock time the way DESIGN 6.4 asks. A time in a spring-forward gap
/// moves forward to the first instant that exists, the end of the gap (02:30 on a day that
/// jumps from 02:00 to 03:00 becomes 03:00), as cron does; jiff's `compatible` would instead
/// shift it by the gap's length (03:30). A time in a fall-back fold takes the earlier instant.
fn resolve(tz: &TimeZone, date: Date, time: Time) -> Option<Timestamp> {
    let local = date.to_datetime(time);
    let ambiguous = tz.to_ambiguous_zoned(local);
    if let AmbiguousOffset::Gap { after, .. } = ambiguous.offset() {
        // Read with the later offset, the local time is an instant just before the jump; the
        // jump itself is the next transition.
        let before_jump = after.to_timestamp(local).ok()?;
        if let Some(jump) = tz.following(before_jump).next() {
            return Some(jump.timestamp());
        }
    }
    ambiguous.compatible().ok().map(|z| z.timestamp())
}

/// The occurrence of `w` that starts on local `date`, if the window starts that day and the
/// occurrence is not empty (an `end` can collapse onto the start around a gap).
fn occurrence(w: &Window, date: Date) -> Option<Period> {
    if w.days
        .as_ref()
        .is_some_and(|days| !days.contains(&date.weekday()))
    {
        return None;
    }
    let start = resolve(&w.timezone, date, w.start)?;
    let end = match w.length {
        WindowLength::Duration(d) => add(start, d),
        WindowLength::End(end) => {
            let end_date = if end > w.start {
                date
            } else {
                date.tomorrow().ok()?
            };
            resolve(&w.timezone, end_date, end)?
        }
    };
    (start < end).then_some(Period { start, end })
}

/// Every occurrence of `w` starting on a local date from a week and a day before `from` up to
/// the local date of `to`, in order of start.
fn occurrences(w: &Window, from: Timestamp, to: Timestamp) -> Vec<Period> {
    let first = from
        .to_zoned(w.timezone.clone())
        .date()
        .saturating_sub(jiff::Span::new().days(LOOKBACK_DAYS));
    let last = to.to_zoned(w.timezone.clone()).date();
    let mut out = Vec::new();
    let mut date = first;
    while date <= last {
        out.extend(occurrence(w, date));
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    out
}

/// Sorts and joins overlapping or touching periods: a window that ends exactly when another
/// starts is one continuous open period.
fn merge(mut periods: Vec<Period>) -> Vec<Period> {
    periods.sort_by_key(|p| (p.start, p.end));
    let mut out: Vec<Period> = Vec::with_capacity(periods.len());
    for p in periods {
        match out.last_mut() {
            Some(last) if p.start <= last.end => last.end = last.end.max(p.end),
            _ => out.push(p),
        }
    }
    out
}

/// The instants at which a change may start, as disjoint periods in order: the union of the
/// windows (everything if there are none) minus the union of the freezes.
fn open_periods(no_windows: bool, merged_windows: Vec<Period>, freezes: &[Freeze]) -> Vec<Period> {
    let base = if no_windows {
        vec![Period {
            start: Timestamp::MIN,
            end: Timestamp::MAX,
        }]
    } else {
        merged_windows
    };
    let frozen = merge(
        freezes
            .iter()
            .filter(|f| f.from < f.until)
            .map(|f| Period {
                start: f.from,
                end: f.until,
            })
            .collect(),
    );
    let mut out = Vec::new();
    for p in base {
        let mut start = p.start;
        for f in frozen.iter().filter(|f| f.start < p.end && f.end > p.start) {
            if f.start > start {
                out.push(Period { start, end: f.start });
            }
            start = start.max(f.end);
        }
        if start < p.end {
            out.push(Period { start, end: p.end });
        }
    }
    out
}

/// The first window with an occurrence ending exactly at `t`.
fn closing_window(windows: &[Window], t: Timestamp) -> Option<&Window> {
    windows
        .iter()
        .find(|w| occurrences(w, t, t).iter().any(|p| p.end == t))
}

/// The window that opens at `t`: preferably one starting exactly then, else one already
/// running (when `t` is the end of a freeze).
fn opening_window(windows: &[Window], t: Timestamp) -> Option<&Window> {
    let covering: Vec<(&Window, bool)> = windows
        .iter()
        .filter_map(|w| {
            let occ = occurrences(w, t, t);
            let cover = occ.iter().find(|p| p.contains(t))?;
            Some((w, cover.start == t))
        })
        .collect();
    covering
        .iter()
        .find(|(_, starts)| *starts)
        .or_else(|| covering.first())
        .map(|(w, _)| *w)
}

fn show(t: Timestamp, tz: &TimeZone, fmt: &str) -> String {
    let zoned = t.to_zoned(tz.clone());
    jiff::fmt::strtime::format(fmt, &zoned).unwrap_or_else(|_| zoned.to_string())
}

fn show_utc(t: Timestamp) -> String {
    show(t, &TimeZone::UTC, "%Y-%m-%d %H:%M UTC")
}

fn parenthesised(reason: &str) -> String {
    let reason = reason.trim();
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

#[cfg(test)]
mod tests;
