//! TEMPORARY stand-in until the real window module lands.
use jiff::{SignedDuration, Timestamp};
#[derive(Debug, Clone)]
pub struct Window {
    pub days: Option<Vec<jiff::civil::Weekday>>,
    pub start: jiff::civil::Time,
    pub length: WindowLength,
    pub timezone: jiff::tz::TimeZone,
}
#[derive(Debug, Clone)]
pub enum WindowLength {
    Duration(SignedDuration),
    End(jiff::civil::Time),
}
#[derive(Debug, Clone)]
pub struct Freeze {
    pub from: Timestamp,
    pub until: Timestamp,
    pub reason: String,
}
pub struct Availability {
    pub open: bool,
    pub window_open: bool,
    pub closes_at: Option<Timestamp>,
    pub next_open: Option<Timestamp>,
    pub freeze: Option<usize>,
}
#[derive(Debug)]
pub struct WindowLengthError;
impl std::fmt::Display for WindowLengthError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bad length")
    }
}
pub fn availability(_w: &[Window], _f: &[Freeze], _now: Timestamp) -> Availability {
    Availability {
        open: true,
        window_open: true,
        closes_at: None,
        next_open: None,
        freeze: None,
    }
}
pub fn window_length_ok(_w: &Window) -> Result<(), WindowLengthError> {
    Ok(())
}
pub fn describe(_w: &[Window], _f: &[Freeze], _a: &Availability, _now: Timestamp) -> String {
    "no window (any time)".into()
}
pub fn format_countdown(d: SignedDuration) -> String {
    format!("in {}s", d.as_secs())
}
