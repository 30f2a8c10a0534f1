//! Tests of windows and freezes: lengths, days, midnight crossings, DST gaps and folds,
//! overlapping and chained windows and freezes, and how a state is described.

use super::*;
use jiff::civil::{date, time};

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

/// A local wall-clock instant, resolved the compatible way.
fn at(zone: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
    date(y, mo, d).at(h, mi, 0, 0).in_tz(zone).unwrap().timestamp()
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

fn daily(zone: &str, start: Time, length: WindowLength) -> Window {
    Window {
        days: None,
        start,
        length,
        timezone: tz(zone),
    }
}

fn on(days: &[Weekday], zone: &str, start: Time, length: WindowLength) -> Window {
    Window {
        days: Some(days.to_vec()),
        ..daily(zone, start, length)
    }
}

fn freeze(from: &str, until: &str, reason: &str) -> Freeze {
    Freeze {
        from: utc(from),
        until: utc(until),
        reason: reason.into(),
    }
}

fn local(t: Timestamp, zone: &str) -> String {
    t.to_zoned(tz(zone)).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

// --- window_length_ok ---

#[test]
fn zero_and_negative_durations_are_rejected() {
    let w = daily(
        "UTC",
        time(2, 0, 0, 0),
        WindowLength::Duration(SignedDuration::ZERO),
    );
    assert_eq!(window_length_ok(&w), Err(WindowLengthError::NotPositive));
    let w = daily("UTC", time(2, 0, 0, 0), WindowLength::Duration(-hours(1)));
    assert_eq!(window_length_ok(&w), Err(WindowLengthError::NotPositive));
}

#[test]
fn exactly_one_week_is_accepted_and_a_second_more_rejected() {
    let w = daily("UTC", time(2, 0, 0, 0), WindowLength::Duration(hours(7 * 24)));
    assert_eq!(window_length_ok(&w), Ok(()));
    let w = daily(
        "UTC",
        time(2, 0, 0, 0),
        WindowLength::Duration(hours(7 * 24) + SignedDuration::from_secs(1)),
    );
    assert_eq!(window_length_ok(&w), Err(WindowLengthError::LongerThanWeek));
    let w = daily(
        "UTC",
        time(2, 0, 0, 0),
        WindowLength::Duration(SignedDuration::MAX),
    );
    assert_eq!(window_length_ok(&w), Err(WindowLengthError::LongerThanWeek));
}

#[test]
fn end_times_are_always_accepted() {
    for end in [time(2, 0, 0, 0), time(1, 0, 0, 0), time(3, 0, 0, 0)] {
        let w = daily("Europe/Berlin", time(2, 0, 0, 0), WindowLength::End(end));
        assert_eq!(window_length_ok(&w), Ok(()));
    }
}

#[test]
fn length_errors_read_well() {
    assert_eq!(
        WindowLengthError::NotPositive.to_string(),
        "duration must be more than zero"
    );
    assert_eq!(
        WindowLengthError::LongerThanWeek.to_string(),
        "duration must be at most 7 days"
    );
}

// --- basic evaluation ---

#[test]
fn no_windows_no_freezes_is_always_open() {
    let a = availability(&[], &[], utc("2026-06-01T12:00:00Z"));
    assert_eq!(
        a,
        Availability {
            open: true,
            window_open: true,
            closes_at: None,
            next_open: None,
            freeze: None
        }
    );
    assert_eq!(
        describe(&[], &[], &a, utc("2026-06-01T12:00:00Z")),
        "no window (any time)"
    );
}

#[test]
fn simple_daily_window_open_and_closed() {
    let w = [daily("UTC", time(2, 0, 0, 0), WindowLength::Duration(hours(3)))];
    let inside = availability(&w, &[], utc("2026-06-01T03:00:00Z"));
    assert!(inside.open && inside.window_open);
    assert_eq!(inside.closes_at, Some(utc("2026-06-01T05:00:00Z")));
    assert_eq!(inside.next_open, None);

    let before = availability(&w, &[], utc("2026-06-01T01:00:00Z"));
    assert!(!before.open && !before.window_open);
    assert_eq!(before.closes_at, None);
    assert_eq!(before.next_open, Some(utc("2026-06-01T02:00:00Z")));

    let after = availability(&w, &[], utc("2026-06-01T05:00:00Z"));
    assert!(!after.open, "the end is exclusive");
    assert_eq!(after.next_open, Some(utc("2026-06-02T02:00:00Z")));

    let start = availability(&w, &[], utc("2026-06-01T02:00:00Z"));
    assert!(start.open, "the start is inclusive");
}

#[test]
fn days_are_the_days_a_window_starts() {
    // 2026-11-28 is a Saturday.
    let w = [on(
        &[Weekday::Saturday, Weekday::Sunday],
        "Europe/Berlin",
        time(2, 0, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    let tue = at("Europe/Berlin", 2026, 11, 24, 3, 0);
    let a = availability(&w, &[], tue);
    assert!(!a.open);
    assert_eq!(a.next_open, Some(at("Europe/Berlin", 2026, 11, 28, 2, 0)));
    let sun = availability(&w, &[], at("Europe/Berlin", 2026, 11, 29, 4, 59));
    assert!(sun.open);
    assert_eq!(sun.closes_at, Some(at("Europe/Berlin", 2026, 11, 29, 5, 0)));
    let sun_after = availability(&w, &[], at("Europe/Berlin", 2026, 11, 29, 5, 0));
    assert_eq!(sun_after.next_open, Some(at("Europe/Berlin", 2026, 12, 5, 2, 0)));
}

#[test]
fn a_week_long_window_started_seven_days_ago_is_still_seen() {
    // Starts Mondays 00:00 UTC for exactly a week: always open, chained forever.
    let w = [on(
        &[Weekday::Monday],
        "UTC",
        time(0, 0, 0, 0),
        WindowLength::Duration(hours(7 * 24)),
    )];
    // 2026-06-07 is a Sunday, 23:59: the occurrence started 2026-06-01.
    let a = availability(&w, &[], utc("2026-06-07T23:59:00Z"));
    assert!(a.open);
    assert_eq!(a.closes_at, None, "chains beyond the horizon");
}

#[test]
fn empty_days_never_open() {
    let w = [on(&[], "UTC", time(2, 0, 0, 0), WindowLength::Duration(hours(3)))];
    let now = utc("2026-06-01T03:00:00Z");
    let a = availability(&w, &[], now);
    assert!(!a.open && !a.window_open);
    assert_eq!(a.next_open, None);
    assert_eq!(describe(&w, &[], &a, now), "window closed; never opens");
}

// --- midnight ---

#[test]
fn end_before_start_crosses_midnight_into_a_day_not_listed() {
    // 2026-11-27 is a Friday.
    let w = [on(
        &[Weekday::Friday],
        "UTC",
        time(22, 0, 0, 0),
        WindowLength::End(time(2, 0, 0, 0)),
    )];
    let sat_1 = availability(&w, &[], utc("2026-11-28T01:00:00Z"));
    assert!(sat_1.open);
    assert_eq!(sat_1.closes_at, Some(utc("2026-11-28T02:00:00Z")));
    let sat_3 = availability(&w, &[], utc("2026-11-28T03:00:00Z"));
    assert!(!sat_3.open);
    assert_eq!(sat_3.next_open, Some(utc("2026-12-04T22:00:00Z")));
    let fri_21 = availability(&w, &[], utc("2026-11-27T21:59:59Z"));
    assert_eq!(fri_21.next_open, Some(utc("2026-11-27T22:00:00Z")));
    // Thursday night is not a Friday start.
    assert!(!availability(&w, &[], utc("2026-11-27T01:00:00Z")).open);
}

#[test]
fn end_equal_to_start_is_a_whole_day_and_daily_chains_forever() {
    let w = [on(
        &[Weekday::Monday],
        "UTC",
        time(6, 0, 0, 0),
        WindowLength::End(time(6, 0, 0, 0)),
    )];
    // 2026-06-01 is a Monday.
    let a = availability(&w, &[], utc("2026-06-02T05:59:00Z"));
    assert!(a.open);
    assert_eq!(a.closes_at, Some(utc("2026-06-02T06:00:00Z")));

    let every_day = [daily(
        "UTC",
        time(6, 0, 0, 0),
        WindowLength::End(time(6, 0, 0, 0)),
    )];
    let now = utc("2026-06-02T05:59:00Z");
    let a = availability(&every_day, &[], now);
    assert!(a.open);
    assert_eq!(a.closes_at, None);
    assert_eq!(
        describe(&every_day, &[], &a, now),
        "window open (no close within 15 days)"
    );
}

// --- DST, Europe/Berlin 2026: 29 March 02:00 -> 03:00, 25 October 03:00 -> 02:00 ---

#[test]
fn berlin_spring_forward_start_in_the_gap_moves_forward() {
    let w = [daily(
        "Europe/Berlin",
        time(2, 30, 0, 0),
        WindowLength::Duration(hours(1)),
    )];
    let a = availability(&w, &[], utc("2026-03-28T23:00:00Z"));
    let start = a.next_open.unwrap();
    assert_eq!(local(start, "Europe/Berlin"), "2026-03-29 03:00 CEST");
    assert_eq!(start, utc("2026-03-29T01:00:00Z"));
    let inside = availability(&w, &[], start);
    assert_eq!(inside.closes_at, Some(utc("2026-03-29T02:00:00Z")));
    // The day before and after are ordinary.
    let before = availability(&w, &[], utc("2026-03-28T00:00:00Z"));
    assert_eq!(
        local(before.next_open.unwrap(), "Europe/Berlin"),
        "2026-03-28 02:30 CET"
    );
    let after = availability(&w, &[], utc("2026-03-29T12:00:00Z"));
    assert_eq!(
        local(after.next_open.unwrap(), "Europe/Berlin"),
        "2026-03-30 02:30 CEST"
    );
}

#[test]
fn berlin_fall_back_ambiguous_start_takes_the_earlier_instant() {
    let w = [daily(
        "Europe/Berlin",
        time(2, 30, 0, 0),
        WindowLength::Duration(hours(1)),
    )];
    let a = availability(&w, &[], utc("2026-10-24T22:00:00Z"));
    // 02:30 CEST (+02:00), not 02:30 CET (+01:00).
    assert_eq!(a.next_open, Some(utc("2026-10-25T00:30:00Z")));
    assert_eq!(
        local(a.next_open.unwrap(), "Europe/Berlin"),
        "2026-10-25 02:30 CEST"
    );
}

#[test]
fn berlin_duration_across_fall_back_is_elapsed_time() {
    // 01:00 CEST + 3 elapsed hours = 03:00 CET, not 04:00: one wall hour earlier.
    let w = [daily(
        "Europe/Berlin",
        time(1, 0, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    let a = availability(&w, &[], at("Europe/Berlin", 2026, 10, 25, 1, 30));
    assert!(a.open);
    let closes = a.closes_at.unwrap();
    assert_eq!(local(closes, "Europe/Berlin"), "2026-10-25 03:00 CET");
    assert_eq!(
        closes.duration_since(at("Europe/Berlin", 2026, 10, 25, 1, 0)),
        hours(3)
    );
}

#[test]
fn berlin_duration_across_spring_forward_is_elapsed_time() {
    // 01:00 CET + 3 elapsed hours = 05:00 CEST.
    let w = [daily(
        "Europe/Berlin",
        time(1, 0, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    let a = availability(&w, &[], at("Europe/Berlin", 2026, 3, 29, 1, 30));
    assert_eq!(
        local(a.closes_at.unwrap(), "Europe/Berlin"),
        "2026-03-29 05:00 CEST"
    );
}

#[test]
fn berlin_end_time_across_dst_is_wall_clock() {
    // 01:00 to 05:00 wall clock: 3 elapsed hours in spring, 5 in autumn.
    let w = [daily(
        "Europe/Berlin",
        time(1, 0, 0, 0),
        WindowLength::End(time(5, 0, 0, 0)),
    )];
    let spring_start = at("Europe/Berlin", 2026, 3, 29, 1, 0);
    let a = availability(&w, &[], spring_start);
    assert_eq!(
        local(a.closes_at.unwrap(), "Europe/Berlin"),
        "2026-03-29 05:00 CEST"
    );
    assert_eq!(a.closes_at.unwrap().duration_since(spring_start), hours(3));

    let autumn_start = at("Europe/Berlin", 2026, 10, 25, 1, 0);
    let a = availability(&w, &[], autumn_start);
    assert_eq!(
        local(a.closes_at.unwrap(), "Europe/Berlin"),
        "2026-10-25 05:00 CET"
    );
    assert_eq!(a.closes_at.unwrap().duration_since(autumn_start), hours(5));
}

#[test]
fn berlin_end_in_the_gap_moves_forward() {
    // end 02:30 does not exist on 29 March: the window ends at 03:00 CEST.
    let w = [daily(
        "Europe/Berlin",
        time(1, 0, 0, 0),
        WindowLength::End(time(2, 30, 0, 0)),
    )];
    let a = availability(&w, &[], at("Europe/Berlin", 2026, 3, 29, 1, 0));
    assert_eq!(
        local(a.closes_at.unwrap(), "Europe/Berlin"),
        "2026-03-29 03:00 CEST"
    );
    assert_eq!(a.closes_at, Some(utc("2026-03-29T01:00:00Z")));
}

#[test]
fn an_occurrence_collapsed_by_the_gap_is_skipped() {
    // 02:15 to 02:45 both fall into the gap and resolve to 03:00: no window that night.
    let w = [daily(
        "Europe/Berlin",
        time(2, 15, 0, 0),
        WindowLength::End(time(2, 45, 0, 0)),
    )];
    let a = availability(&w, &[], utc("2026-03-28T22:00:00Z"));
    assert!(!a.open);
    assert_eq!(
        local(a.next_open.unwrap(), "Europe/Berlin"),
        "2026-03-30 02:15 CEST"
    );
}

// --- DST, America/New_York 2026: 8 March 02:00 -> 03:00, 1 November 02:00 -> 01:00 ---

#[test]
fn new_york_spring_forward_start_in_the_gap_moves_forward() {
    let w = [daily(
        "America/New_York",
        time(2, 30, 0, 0),
        WindowLength::Duration(hours(2)),
    )];
    let a = availability(&w, &[], at("America/New_York", 2026, 3, 8, 0, 0));
    let start = a.next_open.unwrap();
    assert_eq!(local(start, "America/New_York"), "2026-03-08 03:00 EDT");
    assert_eq!(start, utc("2026-03-08T07:00:00Z"));
}

#[test]
fn new_york_fall_back_ambiguous_start_takes_the_earlier_instant() {
    let w = [daily(
        "America/New_York",
        time(1, 30, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    let a = availability(&w, &[], at("America/New_York", 2026, 11, 1, 0, 0));
    let start = a.next_open.unwrap();
    // 01:30 EDT (-04:00) = 05:30 UTC; the later 01:30 EST would be 06:30 UTC.
    assert_eq!(start, utc("2026-11-01T05:30:00Z"));
    assert_eq!(local(start, "America/New_York"), "2026-11-01 01:30 EDT");
    // 3 elapsed hours end at 03:30 EST: wall-clock 01:30 + 2h.
    let inside = availability(&w, &[], start);
    assert_eq!(inside.closes_at, Some(utc("2026-11-01T08:30:00Z")));
    assert_eq!(
        local(inside.closes_at.unwrap(), "America/New_York"),
        "2026-11-01 03:30 EST"
    );
    // The second 01:30 (EST) is inside the window, which does not start again then.
    let second = utc("2026-11-01T06:30:00Z");
    let again = availability(&w, &[], second);
    assert!(again.open);
    assert_eq!(again.closes_at, Some(utc("2026-11-01T08:30:00Z")));
}

#[test]
fn new_york_end_time_across_fall_back_is_wall_clock() {
    // 00:00 to 04:00 wall clock is 5 elapsed hours on 1 November.
    let w = [daily(
        "America/New_York",
        time(0, 0, 0, 0),
        WindowLength::End(time(4, 0, 0, 0)),
    )];
    let start = at("America/New_York", 2026, 11, 1, 0, 0);
    let a = availability(&w, &[], start);
    assert_eq!(a.closes_at.unwrap().duration_since(start), hours(5));
    assert_eq!(
        local(a.closes_at.unwrap(), "America/New_York"),
        "2026-11-01 04:00 EST"
    );
}

#[test]
fn new_york_midnight_crossing_end_across_spring_forward() {
    // Saturday 22:00 to Sunday 04:00 over the 8 March gap: 5 elapsed hours.
    let w = [on(
        &[Weekday::Saturday],
        "America/New_York",
        time(22, 0, 0, 0),
        WindowLength::End(time(4, 0, 0, 0)),
    )];
    let start = at("America/New_York", 2026, 3, 7, 22, 0);
    let a = availability(&w, &[], start);
    assert!(a.open);
    assert_eq!(a.closes_at.unwrap().duration_since(start), hours(5));
    assert_eq!(
        local(a.closes_at.unwrap(), "America/New_York"),
        "2026-03-08 04:00 EDT"
    );
}

#[test]
fn ambiguous_end_takes_the_earlier_instant() {
    // end 01:30 on 1 November is the first 01:30 (EDT).
    let w = [daily(
        "America/New_York",
        time(23, 0, 0, 0),
        WindowLength::End(time(1, 30, 0, 0)),
    )];
    let a = availability(&w, &[], at("America/New_York", 2026, 10, 31, 23, 0));
    assert_eq!(a.closes_at, Some(utc("2026-11-01T05:30:00Z")));
}

#[test]
fn half_hour_gap_moves_to_its_end_not_by_its_length() {
    // Australia/Lord_Howe jumps 02:00 -> 02:30 on 4 October 2026. A 02:15 start becomes
    // 02:30 (where the gap ends), not 02:45 (jiff's `compatible`).
    let w = [daily(
        "Australia/Lord_Howe",
        time(2, 15, 0, 0),
        WindowLength::Duration(hours(1)),
    )];
    let a = availability(&w, &[], at("Australia/Lord_Howe", 2026, 10, 4, 0, 0));
    let start = a.next_open.unwrap();
    assert_eq!(local(start, "Australia/Lord_Howe"), "2026-10-04 02:30 +11");
    let compatible = date(2026, 10, 4)
        .at(2, 15, 0, 0)
        .in_tz("Australia/Lord_Howe")
        .unwrap();
    assert_eq!(compatible.strftime("%H:%M").to_string(), "02:45");
}

// --- several windows ---

#[test]
fn overlapping_windows_are_one_open_period() {
    let w = [
        daily("UTC", time(1, 0, 0, 0), WindowLength::Duration(hours(3))),
        daily("UTC", time(3, 0, 0, 0), WindowLength::Duration(hours(3))),
    ];
    let a = availability(&w, &[], utc("2026-06-01T01:30:00Z"));
    assert!(a.open);
    assert_eq!(a.closes_at, Some(utc("2026-06-01T06:00:00Z")));
    let b = availability(&w, &[], utc("2026-06-01T06:00:00Z"));
    assert_eq!(b.next_open, Some(utc("2026-06-02T01:00:00Z")));
}

#[test]
fn adjacent_windows_chain_even_across_zones() {
    // 01:00-03:00 UTC, then Berlin 05:00-06:00 CEST = 03:00-04:00 UTC, then 04:00-05:00
    // UTC: each starts exactly when the one before ends.
    let w = [
        daily("UTC", time(1, 0, 0, 0), WindowLength::End(time(3, 0, 0, 0))),
        daily(
            "Europe/Berlin",
            time(5, 0, 0, 0),
            WindowLength::End(time(6, 0, 0, 0)),
        ),
        daily("UTC", time(4, 0, 0, 0), WindowLength::Duration(hours(1))),
    ];
    let a = availability(&w, &[], utc("2026-06-01T01:00:00Z"));
    assert!(a.open);
    assert_eq!(a.closes_at, Some(utc("2026-06-01T05:00:00Z")));
    let now = utc("2026-06-01T01:00:00Z");
    assert_eq!(describe(&w, &[], &a, now), "window open until 05:00 UTC");
}

#[test]
fn the_earlier_of_two_windows_is_next() {
    let w = [
        daily("UTC", time(20, 0, 0, 0), WindowLength::Duration(hours(1))),
        daily("UTC", time(8, 0, 0, 0), WindowLength::Duration(hours(1))),
    ];
    let a = availability(&w, &[], utc("2026-06-01T12:00:00Z"));
    assert_eq!(a.next_open, Some(utc("2026-06-01T20:00:00Z")));
    let a = availability(&w, &[], utc("2026-06-01T21:00:00Z"));
    assert_eq!(a.next_open, Some(utc("2026-06-02T08:00:00Z")));
}

// --- freezes ---

#[test]
fn freeze_inside_an_open_window_closes_it_early() {
    let w = [daily("UTC", time(0, 0, 0, 0), WindowLength::Duration(hours(6)))];
    let f = [freeze("2026-06-01T03:00:00Z", "2026-06-03T04:00:00Z", "incident")];
    let a = availability(&w, &f, utc("2026-06-01T01:00:00Z"));
    assert!(a.open);
    assert_eq!(a.closes_at, Some(utc("2026-06-01T03:00:00Z")));

    let frozen = availability(&w, &f, utc("2026-06-01T03:00:00Z"));
    assert!(!frozen.open);
    assert!(frozen.window_open, "the window itself is open");
    assert_eq!(frozen.freeze, Some(0));
    // The freeze ends inside the 3 June window: open from the freeze's end.
    assert_eq!(frozen.next_open, Some(utc("2026-06-03T04:00:00Z")));
    assert_eq!(frozen.closes_at, None);

    // At the freeze's end (exclusive) it is open again until the window ends.
    let after = availability(&w, &f, utc("2026-06-03T04:00:00Z"));
    assert!(after.open);
    assert_eq!(after.freeze, None);
    assert_eq!(after.closes_at, Some(utc("2026-06-03T06:00:00Z")));
}

#[test]
fn freeze_ending_outside_a_window_opens_at_the_next_window() {
    let w = [on(
        &[Weekday::Monday],
        "Europe/Berlin",
        time(2, 0, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    let f = [freeze(
        "2026-12-20T00:00:00Z",
        "2027-01-04T00:00:00Z",
        "year-end freeze",
    )];
    let now = utc("2026-12-22T21:30:00Z");
    let a = availability(&w, &f, now);
    assert!(!a.open && !a.window_open);
    assert_eq!(a.freeze, Some(0));
    // Monday 4 January 2027 02:00 CET.
    assert_eq!(a.next_open, Some(utc("2027-01-04T01:00:00Z")));
    assert_eq!(
        describe(&w, &f, &a, now),
        "frozen until 2027-01-04 00:00 UTC (year-end freeze); opens Mon 2027-01-04 02:00 CET (in 12d 3h)"
    );
}

#[test]
fn a_freeze_longer_than_the_horizon_still_finds_the_next_window() {
    let w = [on(
        &[Weekday::Sunday],
        "UTC",
        time(2, 0, 0, 0),
        WindowLength::Duration(hours(1)),
    )];
    let f = [freeze("2026-01-01T00:00:00Z", "2026-07-01T00:00:00Z", "")];
    let a = availability(&w, &f, utc("2026-02-01T00:00:00Z"));
    // 2026-07-05 is the first Sunday after the freeze.
    assert_eq!(a.next_open, Some(utc("2026-07-05T02:00:00Z")));
}

#[test]
fn no_windows_with_a_freeze() {
    let f = [freeze(
        "2026-12-20T00:00:00Z",
        "2027-01-04T00:00:00Z",
        "year-end freeze",
    )];
    let before = utc("2026-12-19T12:00:00Z");
    let a = availability(&[], &f, before);
    assert!(a.open && a.window_open);
    assert_eq!(a.closes_at, Some(utc("2026-12-20T00:00:00Z")));
    assert_eq!(
        describe(&[], &f, &a, before),
        "no window (any time) until 2026-12-20 00:00 UTC, then frozen (year-end freeze)"
    );

    let during = utc("2026-12-24T00:00:00Z");
    let a = availability(&[], &f, during);
    assert!(!a.open && a.window_open);
    assert_eq!(a.freeze, Some(0));
    assert_eq!(a.next_open, Some(utc("2027-01-04T00:00:00Z")));
    assert_eq!(
        describe(&[], &f, &a, during),
        "frozen until 2027-01-04 00:00 UTC (year-end freeze); opens Mon 2027-01-04 00:00 UTC (in 11d)"
    );

    let after = availability(&[], &f, utc("2027-01-04T00:00:00Z"));
    assert!(after.open);
    assert_eq!(after.closes_at, None);
}

#[test]
fn chained_and_overlapping_freezes_are_one() {
    let f = [
        freeze("2026-12-20T00:00:00Z", "2026-12-27T00:00:00Z", "first"),
        freeze("2026-12-27T00:00:00Z", "2027-01-02T00:00:00Z", "second"),
        freeze("2026-12-30T00:00:00Z", "2027-01-04T00:00:00Z", "third"),
    ];
    let a = availability(&[], &f, utc("2026-12-21T00:00:00Z"));
    assert_eq!(a.freeze, Some(0));
    assert_eq!(a.next_open, Some(utc("2027-01-04T00:00:00Z")));
    let b = availability(&[], &f, utc("2026-12-31T00:00:00Z"));
    assert_eq!(b.freeze, Some(1), "the first freeze in order that covers now");
}

#[test]
fn a_past_freeze_changes_nothing() {
    let w = [daily("UTC", time(2, 0, 0, 0), WindowLength::Duration(hours(3)))];
    let f = [freeze("2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z", "old")];
    let now = utc("2026-06-01T03:00:00Z");
    assert_eq!(availability(&w, &f, now), availability(&w, &[], now));
}

#[test]
fn an_inverted_freeze_covers_nothing() {
    let f = [freeze(
        "2026-06-02T00:00:00Z",
        "2026-06-01T00:00:00Z",
        "backwards",
    )];
    let a = availability(&[], &f, utc("2026-06-01T12:00:00Z"));
    assert!(a.open);
    assert_eq!(a.freeze, None);
}

// --- describe ---

#[test]
fn describe_open_until_in_the_closing_windows_zone() {
    let w = [
        // 01:00-02:00 UTC lies inside the Berlin window, which alone decides the close.
        daily("UTC", time(1, 0, 0, 0), WindowLength::Duration(hours(1))),
        on(
            &[Weekday::Saturday],
            "Europe/Berlin",
            time(2, 0, 0, 0),
            WindowLength::Duration(hours(3)),
        ),
    ];
    let now = at("Europe/Berlin", 2026, 11, 28, 2, 30);
    let a = availability(&w, &[], now);
    assert_eq!(describe(&w, &[], &a, now), "window open until 05:00 CET");
}

#[test]
fn describe_closed_with_countdown() {
    let w = [on(
        &[Weekday::Saturday, Weekday::Sunday],
        "Europe/Berlin",
        time(2, 0, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    // Sunday 22 November 05:59 CET; the next start is Saturday 02:00 CET, 5d 20h 1m later.
    let now = at("Europe/Berlin", 2026, 11, 22, 5, 0) + SignedDuration::from_mins(59);
    let a = availability(&w, &[], now);
    assert_eq!(
        describe(&w, &[], &a, now),
        "window closed; opens Sat 2026-11-28 02:00 CET (in 5d 20h)"
    );
}

#[test]
fn describe_summer_time_abbreviation() {
    let w = [daily(
        "Europe/Berlin",
        time(2, 0, 0, 0),
        WindowLength::Duration(hours(3)),
    )];
    let now = at("Europe/Berlin", 2026, 7, 1, 1, 0);
    let a = availability(&w, &[], now);
    assert_eq!(
        describe(&w, &[], &a, now),
        "window closed; opens Wed 2026-07-01 02:00 CEST (in 1h)"
    );
}

#[test]
fn describe_far_close_shows_the_date() {
    let w = [on(
        &[Weekday::Monday],
        "UTC",
        time(0, 0, 0, 0),
        WindowLength::Duration(hours(7 * 24) - SignedDuration::from_mins(1)),
    )];
    let now = utc("2026-06-01T00:00:00Z");
    let a = availability(&w, &[], now);
    assert_eq!(
        describe(&w, &[], &a, now),
        "window open until Sun 2026-06-07 23:59 UTC"
    );
    // Six days exactly is still the short form.
    let w = [on(
        &[Weekday::Monday],
        "UTC",
        time(0, 0, 0, 0),
        WindowLength::Duration(hours(6 * 24)),
    )];
    let a = availability(&w, &[], now);
    assert_eq!(describe(&w, &[], &a, now), "window open until 00:00 UTC");
}

#[test]
fn describe_window_cut_by_a_freeze() {
    let w = [daily(
        "Europe/Berlin",
        time(0, 0, 0, 0),
        WindowLength::Duration(hours(6)),
    )];
    let f = [freeze("2026-06-01T01:00:00Z", "2026-06-02T00:00:00Z", "")];
    let now = utc("2026-06-01T00:00:00Z");
    let a = availability(&w, &f, now);
    assert_eq!(a.closes_at, Some(utc("2026-06-01T01:00:00Z")));
    assert_eq!(
        describe(&w, &f, &a, now),
        "window open until 2026-06-01 01:00 UTC, then frozen"
    );
}

#[test]
fn describe_frozen_inside_a_window_opens_in_that_windows_zone() {
    let w = [daily(
        "America/New_York",
        time(0, 0, 0, 0),
        WindowLength::Duration(hours(6)),
    )];
    let f = [freeze(
        "2026-06-01T04:00:00Z",
        "2026-06-01T06:00:00Z",
        "deploy review",
    )];
    let now = utc("2026-06-01T05:00:00Z");
    let a = availability(&w, &f, now);
    assert_eq!(
        describe(&w, &f, &a, now),
        "frozen until 2026-06-01 06:00 UTC (deploy review); opens Mon 2026-06-01 02:00 EDT (in 1h)"
    );
}

// --- countdown ---

#[test]
fn countdown_two_units_rounded_down() {
    let c = |s: i64| format_countdown(SignedDuration::from_secs(s));
    assert_eq!(c(5 * 86_400 + 20 * 3_600 + 59 * 60 + 59), "in 5d 20h");
    assert_eq!(c(3 * 3_600 + 12 * 60 + 59), "in 3h 12m");
    assert_eq!(c(45), "in 45s");
    assert_eq!(c(60), "in 1m");
    assert_eq!(c(61), "in 1m 1s");
    assert_eq!(c(86_400 + 59), "in 1d");
    assert_eq!(c(0), "in 0s");
    assert_eq!(c(-300), "5m ago");
    assert_eq!(format_countdown(SignedDuration::from_millis(999)), "in 0s");
    assert_eq!(
        format_countdown(SignedDuration::MIN),
        format_countdown(SignedDuration::MIN)
    );
}

// --- properties ---

mod properties {
    use super::*;
    use proptest::prelude::*;

    const ZONES: &[&str] = &[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
    ];

    /// 2025-10-01T00:00:00Z: two years of instants from here cover several transitions.
    const BASE: i64 = 1_759_276_800;
    const SPAN: i64 = 2 * 365 * 86_400;

    fn window() -> impl Strategy<Value = Window> {
        let days = prop::option::of(prop::collection::vec(0i8..7, 0..4));
        let start = (0i8..24, prop::sample::select(vec![0i8, 15, 30, 45]));
        let length = prop_oneof![
            (60i64..=7 * 86_400).prop_map(|s| WindowLength::Duration(SignedDuration::from_secs(s))),
            (1i64..=8 * 3_600).prop_map(|s| WindowLength::Duration(SignedDuration::from_secs(s))),
            (0i8..24, prop::sample::select(vec![0i8, 15, 30, 45]))
                .prop_map(|(h, m)| WindowLength::End(time(h, m, 0, 0))),
        ];
        (days, start, length, prop::sample::select(ZONES)).prop_map(|(days, (h, m), length, zone)| Window {
            days: days.map(|d| {
                d.into_iter()
                    .map(|n| Weekday::from_monday_zero_offset(n).unwrap())
                    .collect()
            }),
            start: time(h, m, 0, 0),
            length,
            timezone: TimeZone::get(zone).unwrap(),
        })
    }

    /// A freeze as (start relative to `now`, length), so that freezes cover, precede and
    /// follow `now` often.
    fn freeze() -> impl Strategy<Value = (i64, i64)> {
        (-45 * 86_400i64..20 * 86_400, 1i64..40 * 86_400)
    }

    /// The rule of DESIGN 6.4 done the slow way: an existing local time is taken as it is
    /// (the earlier instant if it is ambiguous); one that does not exist becomes the
    /// earliest instant whose local time is later, found by bisection.
    fn reference_resolve(tz: &TimeZone, local: jiff::civil::DateTime) -> Timestamp {
        let z = local.to_zoned(tz.clone()).unwrap();
        if z.datetime() == local {
            return z.timestamp();
        }
        let (mut lo, mut hi) = (z.timestamp() - hours(2), z.timestamp());
        while hi.duration_since(lo) > SignedDuration::from_secs(1) {
            let mid = lo + hi.duration_since(lo) / 2;
            if mid.to_zoned(tz.clone()).datetime() >= local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Independent of the implementation's enumeration: every occurrence starting on any
    /// local date near `t`, checked directly.
    fn in_some_occurrence(windows: &[Window], t: Timestamp) -> bool {
        windows.iter().any(|w| {
            let today = t.to_zoned(w.timezone.clone()).date();
            (-8..=1).any(|off| {
                let d = today.checked_add(jiff::Span::new().days(off)).unwrap();
                if w.days.as_ref().is_some_and(|days| !days.contains(&d.weekday())) {
                    return false;
                }
                let start = reference_resolve(&w.timezone, d.to_datetime(w.start));
                let end = match w.length {
                    WindowLength::Duration(len) => start + len,
                    WindowLength::End(e) => {
                        let ed = if e > w.start { d } else { d.tomorrow().unwrap() };
                        reference_resolve(&w.timezone, ed.to_datetime(e))
                    }
                };
                start <= t && t < end
            })
        })
    }

    fn frozen(freezes: &[Freeze], t: Timestamp) -> bool {
        freezes.iter().any(|f| f.from <= t && t < f.until)
    }

    fn open_by_definition(windows: &[Window], freezes: &[Freeze], t: Timestamp) -> bool {
        (windows.is_empty() || in_some_occurrence(windows, t)) && !frozen(freezes, t)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn availability_agrees_with_the_rules(
            windows in prop::collection::vec(window(), 0..4),
            freezes in prop::collection::vec(freeze(), 0..3),
            now in 0..SPAN,
            samples in prop::collection::vec(0.0f64..1.0, 12),
        ) {
            let now = Timestamp::from_second(BASE + now).unwrap();
            let freezes: Vec<Freeze> = freezes
                .into_iter()
                .map(|(offset, len)| Freeze {
                    from: now + SignedDuration::from_secs(offset),
                    until: now + SignedDuration::from_secs(offset + len),
                    reason: String::new(),
                })
                .collect();
            let a = availability(&windows, &freezes, now);

            prop_assert_eq!(a.open, open_by_definition(&windows, &freezes, now));
            prop_assert_eq!(a.window_open, windows.is_empty() || in_some_occurrence(&windows, now));
            prop_assert_eq!(a.freeze.is_some(), frozen(&freezes, now));
            if let Some(i) = a.freeze {
                prop_assert!(freezes[i].from <= now && now < freezes[i].until);
            }

            if a.open {
                prop_assert!(a.next_open.is_none());
                if let Some(c) = a.closes_at {
                    prop_assert!(c > now);
                    prop_assert!(!availability(&windows, &freezes, c).open, "open at closes_at");
                    prop_assert!(!open_by_definition(&windows, &freezes, c));
                    let span = c.duration_since(now).as_secs_f64();
                    for f in &samples {
                        let t = now + SignedDuration::from_secs_f64(span * f);
                        prop_assert!(open_by_definition(&windows, &freezes, t), "closed before closes_at");
                    }
                }
            } else {
                prop_assert!(a.closes_at.is_none());
                if let Some(n) = a.next_open {
                    prop_assert!(n > now);
                    prop_assert!(availability(&windows, &freezes, n).open, "not open at next_open");
                    prop_assert!(open_by_definition(&windows, &freezes, n));
                    let span = n.duration_since(now).as_secs_f64();
                    for f in &samples {
                        let t = now + SignedDuration::from_secs_f64(span * f);
                        if t < n {
                            prop_assert!(!availability(&windows, &freezes, t).open, "open before next_open");
                            prop_assert!(!open_by_definition(&windows, &freezes, t));
                        }
                    }
                } else {
                    // Never: no window has an occurrence at all.
                    prop_assert!(!windows.is_empty());
                }
            }
            let text = describe(&windows, &freezes, &a, now);
            prop_assert!(!text.is_empty());
        }

        /// Whatever the window length (validation stops at a week, the model holds any
        /// duration) and wherever `now` is in the timestamp range, nothing panics.
        #[test]
        fn extreme_lengths_and_instants_never_panic(
            mut windows in prop::collection::vec(window(), 0..3),
            lengths in prop::collection::vec(prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()], 3),
            now in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            freeze in prop::option::of(freeze()),
        ) {
            for (w, len) in windows.iter_mut().zip(lengths) {
                w.length = WindowLength::Duration(SignedDuration::from_secs(len));
            }
            let now = Timestamp::from_second(now).unwrap();
            let freezes: Vec<Freeze> = freeze
                .map(|(off, len)| {
                    let from = add(now, SignedDuration::from_secs(off));
                    Freeze { from, until: add(from, SignedDuration::from_secs(len)), reason: "x".into() }
                })
                .into_iter()
                .collect();
            let a = availability(&windows, &freezes, now);
            let _ = describe(&windows, &freezes, &a, now);
            let _ = format_countdown(SignedDuration::from_secs(now.as_second()));
        }
    }
}
