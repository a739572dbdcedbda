//! Update windows: whether a set of them leaves any time at all for an update, and whether
//! they let one happen now.
//!
//! A window is local time in its own zone, so a week of windows in New York and London is
//! looked at minute by minute in UTC, over a winter week and a summer week (daylight saving
//! moves windows of different zones against each other).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::model::{Day, Window};

/// Beyond this many windows the minute-by-minute look is skipped (it would be slow, and such a
/// file is not written by hand).
const MAX_CHECKED_WINDOWS: usize = 64;

/// The first instants of the two weeks looked at: Monday 2026-01-05 and Monday 2026-07-06,
/// 00:00 UTC.
const REFERENCE_WEEKS: [i64; 2] = [1_767_571_200, 1_783_296_000];

/// `Err` with why, when `windows` allow no minute of either reference week.
pub(crate) fn check_some_minute_allowed(windows: &[Window]) -> Result<(), String> {
    if windows.is_empty() || windows.len() > MAX_CHECKED_WINDOWS {
        return Ok(());
    }
    let zones = zones(windows);
    let any_allow = windows.iter().any(|w| !w.deny);
    for start in REFERENCE_WEEKS {
        for minute in 0..7 * 24 * 60 {
            let Ok(at) = Timestamp::from_second(start + minute * 60) else {
                continue;
            };
            if allowed(windows, &zones, at) {
                return Ok(());
            }
        }
    }
    let names = |deny: bool| -> String {
        let names: Vec<String> = (windows.iter())
            .filter(|w| w.deny == deny)
            .map(|w| format!("`{}`", w.name))
            .collect();
        names.join(", ")
    };
    Err(match any_allow {
        true if windows.iter().any(|w| w.deny) => format!(
            "every minute the allow windows ({}) open falls inside a deny window ({})",
            names(false),
            names(true)
        ),
        true => format!("the allow windows ({}) open no minute", names(false)),
        false => format!(
            "the deny windows ({}) cover every minute of the week",
            names(true)
        ),
    })
}

/// How far ahead [`closed`] looks for the next minute an update may happen: past a week, so a
/// window that opens once a week is still found.
const LOOK_AHEAD_MINUTES: i64 = 8 * 24 * 60;

/// Why updates may not happen at `now`, and when they next may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The deny windows open at `now`, by name (empty: no deny window, but no allow window is
    /// open either).
    pub denied_by: Vec<String>,
    /// The allow windows, by name, when none of them is open at `now`.
    pub outside: Vec<String>,
    /// The next minute updates may happen (within eight days), if any.
    pub until: Option<Timestamp>,
}

/// Each window's zone, `None` where it is unknown (plugins.yaml validation refuses such a zone;
/// the window is then skipped).
fn zones(windows: &[Window]) -> Vec<Option<TimeZone>> {
    (windows.iter())
        .map(|w| TimeZone::get(&w.timezone).ok())
        .collect()
}

/// The windows of `windows` (with their `zones`) of kind `deny` open at `at`.
fn open_at<'a>(
    windows: &'a [Window],
    zones: &'a [Option<TimeZone>],
    deny: bool,
    at: Timestamp,
) -> impl Iterator<Item = &'a Window> {
    (windows.iter().zip(zones))
        .filter(move |(window, zone)| {
            window.deny == deny && zone.as_ref().is_some_and(|z| contains(window, z, at))
        })
        .map(|(window, _)| window)
}

/// Whether an update may happen at `at`: inside no deny window and, when there are allow
/// windows, inside one of them.
fn allowed(windows: &[Window], zones: &[Option<TimeZone>], at: Timestamp) -> bool {
    let any_allow = windows.iter().any(|w| !w.deny);
    (!any_allow || open_at(windows, zones, false, at).next().is_some())
        && open_at(windows, zones, true, at).next().is_none()
}

/// `None` when `windows` let an update happen at `now`; else why not and until when.
pub fn closed(windows: &[Window], now: Timestamp) -> Option<Closed> {
    let zones = zones(windows);
    if allowed(windows, &zones, now) {
        return None;
    }
    let names = |open: Vec<&Window>| open.iter().map(|w| w.name.clone()).collect();
    let denied_by = names(open_at(windows, &zones, true, now).collect());
    let outside = match open_at(windows, &zones, false, now).next() {
        Some(_) => Vec::new(),
        None => names(windows.iter().filter(|w| !w.deny).collect()),
    };
    // The next whole minute first: windows open and close on minutes.
    let first = now.as_second().div_euclid(60) * 60 + 60;
    let until = (0..LOOK_AHEAD_MINUTES)
        .filter_map(|minute| Timestamp::from_second(first + minute * 60).ok())
        .find(|at| allowed(windows, &zones, *at));
    Some(Closed {
        denied_by,
        outside,
        until,
    })
}

/// Whether `at` is inside `window` (whose zone is `zone`). A window whose `to` is before its
/// `from` runs past midnight into the next day.
fn contains(window: &Window, zone: &TimeZone, at: Timestamp) -> bool {
    let local = jiff::ZonedDateTime::new(at, zone.clone());
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    let day = local.weekday().to_monday_zero_offset() as usize;
    let listed = |day: usize| window.days.is_empty() || window.days.contains(&Day::ALL[day % 7]);
    let (from, to) = (window.from.minutes, window.to.minutes);
    if from < to {
        listed(day) && (from..to).contains(&minute)
    } else {
        (listed(day) && minute >= from) || (listed(day + 6) && minute < to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::TimeOfDay;

    fn window(name: &str, deny: bool, days: &[Day], from: &str, to: &str, zone: &str) -> Window {
        let minutes = |t: &str| {
            let (h, m) = t.split_once(':').unwrap();
            TimeOfDay {
                minutes: h.parse::<u16>().unwrap() * 60 + m.parse::<u16>().unwrap(),
            }
        };
        Window {
            name: name.into(),
            deny,
            days: days.to_vec(),
            from: minutes(from),
            to: minutes(to),
            timezone: zone.into(),
        }
    }

    #[test]
    fn a_closed_window_says_which_and_until_when() {
        use Day::*;
        let weekdays = [Mon, Tue, Wed, Thu, Fri];
        let freeze = || {
            window(
                "trading-hours",
                true,
                &weekdays,
                "09:30",
                "16:00",
                "America/New_York",
            )
        };
        let at = |text: &str| text.parse::<Timestamp>().unwrap();
        // (name, windows, now, expected: (denied by, outside, until))
        type Case<'a> = (
            &'a str,
            Vec<Window>,
            &'a str,
            Option<(Vec<&'a str>, Vec<&'a str>, Option<&'a str>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no windows: always open",
                vec![],
                "2026-12-02T15:00:00Z",
                None,
            ),
            (
                "Wednesday 10:00 in New York: inside the freeze, until 16:00 EST",
                vec![freeze()],
                "2026-12-02T15:00:00Z",
                Some((vec!["trading-hours"], vec![], Some("2026-12-02T21:00:00Z"))),
            ),
            (
                "Wednesday 16:00 in New York: the freeze ended",
                vec![freeze()],
                "2026-12-02T21:00:00Z",
                None,
            ),
            (
                "Saturday: the freeze is for weekdays",
                vec![freeze()],
                "2026-12-05T15:00:00Z",
                None,
            ),
            (
                "outside the only allow window: until it opens the next day",
                vec![window("nights", false, &[], "22:00", "23:00", "UTC")],
                "2026-12-02T23:30:00Z",
                Some((vec![], vec!["nights"], Some("2026-12-03T22:00:00Z"))),
            ),
        ];
        for (name, windows, now, expected) in cases {
            let got = closed(&windows, at(now));
            let expected = expected.map(|(denied, outside, until)| Closed {
                denied_by: denied.into_iter().map(str::to_owned).collect(),
                outside: outside.into_iter().map(str::to_owned).collect(),
                until: until.map(at),
            });
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn windows_that_leave_no_minute_are_named() {
        use Day::*;
        let weekdays = [Mon, Tue, Wed, Thu, Fri];
        let cases: Vec<(&str, Vec<Window>, Option<&str>)> = vec![
            (
                "a trading-hours freeze leaves the nights",
                vec![window(
                    "trading-hours",
                    true,
                    &weekdays,
                    "09:30",
                    "16:00",
                    "America/New_York",
                )],
                None,
            ),
            (
                "a deny window round the clock, every day",
                vec![
                    window("never", true, &[], "00:00", "23:59", "UTC"),
                    window("last-minute", true, &[], "23:59", "00:00", "UTC"),
                ],
                Some("the deny windows (`never`, `last-minute`) cover every minute of the week"),
            ),
            (
                "an allow window inside a deny window",
                vec![
                    window("lunch", false, &weekdays, "12:00", "13:00", "Europe/London"),
                    window("day", true, &[], "08:00", "18:00", "Europe/London"),
                ],
                Some(
                    "every minute the allow windows (`lunch`) open falls inside a deny window (`day`)",
                ),
            ),
            (
                "an allow window past midnight, in another zone than the deny window",
                vec![
                    window("night", false, &weekdays, "22:00", "02:00", "Europe/London"),
                    window(
                        "us-day",
                        true,
                        &weekdays,
                        "09:30",
                        "16:00",
                        "America/New_York",
                    ),
                ],
                None,
            ),
        ];
        for (name, windows, expected) in cases {
            assert_eq!(
                check_some_minute_allowed(&windows).err().as_deref(),
                expected,
                "{name}"
            );
        }
    }
}
