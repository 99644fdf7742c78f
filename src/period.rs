//! Periods and local days for reports: what `--since`/`--until` accept (a date, an RFC 3339
//! time or a duration before now, and nothing else), the time zone days are counted in
//! (`--timezone`, else `TZ`, else the system's), and the local day of a UTC hour.
//!
//! Usage is kept in UTC-hour cells, so a day in a zone whose offset is a whole number of
//! hours is exact; in the others (India's +5:30, Nepal's +5:45, Lord Howe's half-hour
//! summer time) an hour cell can straddle two local days, and reports say so
//! ([`offset_note`]).

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// What `--since`/`--until` was given, checked but not yet placed in a zone.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// `YYYY-MM-DD`: a whole local day.
    Date(NaiveDate),
    /// An RFC 3339 time: that instant.
    Instant(DateTime<FixedOffset>),
    /// A duration (`7d`, `12h`, `90m`): that long before now.
    Ago(std::time::Duration),
}

/// Which end of a period a bound is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first instant included.
    Since,
    /// The first instant no longer included (a date includes its whole day).
    Until,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PeriodError {
    #[error(
        "{0:?} is not a date, time or duration: use YYYY-MM-DD (2026-11-03), an RFC 3339 time \
         (2026-11-03T09:00:00Z, 2026-11-03T09:00:00-08:00) or a duration before now (7d, 12h, 90m)"
    )]
    Bound(String),
    #[error("unknown time zone {0:?}: use an IANA name such as UTC, Europe/Paris or America/Los_Angeles")]
    Zone(String),
    #[error("the period is empty: --until ({1}) is not after --since ({0})")]
    Empty(String, String),
}

impl Spec {
    /// Checks what was given: exactly `YYYY-MM-DD` (a real date, two-digit month and day),
    /// an RFC 3339 time, or a duration humantime reads (`7d`, `12h`, `1w 2d`).
    pub fn parse(text: &str) -> Result<Spec, PeriodError> {
        let t = text.trim();
        let bad = || PeriodError::Bound(text.to_string());
        let b = t.as_bytes();
        let date_shaped = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if date_shaped {
            return NaiveDate::parse_from_str(t, "%Y-%m-%d").map(Spec::Date).map_err(|_| bad());
        }
        if t.len() > 10 && t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t.contains(['T', 't', ' ']) {
            return DateTime::parse_from_rfc3339(t).map(Spec::Instant).map_err(|_| bad());
        }
        // A duration starts with a digit and has a unit: a bare number is ambiguous.
        if t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t.bytes().any(|c| c.is_ascii_alphabetic()) {
            // At most a thousand years: a longer one is no period before now a date can hold.
            if let Some(d) = humantime::parse_duration(t).ok().filter(|d| d.as_secs() <= 1000 * 31_557_600) {
                return Ok(Spec::Ago(d));
            }
        }
        Err(bad())
    }

    /// The bound as a UTC instant: a date starts (`Since`) or ends (`Until`, exclusive: the
    /// start of the next day) at local midnight in `tz`.
    pub fn resolve(&self, side: Side, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        match self {
            Spec::Date(d) => {
                let day = match side {
                    Side::Since => *d,
                    Side::Until => d.succ_opt().unwrap_or(*d),
                };
                day_start(day, tz)
            }
            Spec::Instant(t) => t.to_utc(),
            Spec::Ago(d) => now - Duration::from_std(*d).unwrap_or(Duration::MAX),
        }
    }
}

/// A report's period: UTC instants (since included, until excluded) and the zone its days
/// are counted in.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    pub zone: Tz,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// What the user should know about the bounds (a time inside an hour counts the hour).
    pub notes: Vec<String>,
}

impl Period {
    /// The period of `--since`/`--until` in `zone`; an empty one (until before since) is a
    /// usage error rather than a report of nothing.
    pub fn new(
        since: Option<&Spec>,
        until: Option<&Spec>,
        zone: Tz,
        now: DateTime<Utc>,
    ) -> Result<Period, PeriodError> {
        // Usage is kept by UTC hour: a time or a duration inside an hour takes in the whole
        // hour, so that every report (and the records of an export) counts the same hours.
        let mut notes = Vec::new();
        let mut bound = |spec: &Spec, side: Side| {
            let at = spec.resolve(side, now, zone);
            if matches!(spec, Spec::Date(_)) {
                return (at, at);
            }
            let floor = hour_start(at);
            let whole = match side {
                Side::Since => floor,
                Side::Until if floor == at => at,
                Side::Until => floor + Duration::hours(1),
            };
            if whole != at && matches!(spec, Spec::Instant(_)) {
                let (flag, from) = match side {
                    Side::Since => ("--since", "from"),
                    Side::Until => ("--until", "until"),
                };
                notes.push(format!(
                    "usage is kept by UTC hour: {flag} {} counts the whole hour ({from} {})",
                    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    whole.format("%Y-%m-%dT%H:%MZ")
                ));
            }
            (at, whole)
        };
        let since = since.map(|s| bound(s, Side::Since));
        let until = until.map(|u| bound(u, Side::Until));
        if let (Some((s, _)), Some((u, _))) = (since, until) {
            if u <= s {
                return Err(PeriodError::Empty(s.to_rfc3339(), u.to_rfc3339()));
            }
        }
        Ok(Period { zone, since: since.map(|b| b.1), until: until.map(|b| b.1), notes })
    }

    /// Whether the instant (an hour cell's start, say) is in the period.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// The local day the period starts on.
    pub fn first_day(&self) -> Option<NaiveDate> {
        self.since.map(|s| local_day(s, self.zone))
    }

    /// The last local day the period includes.
    pub fn last_day(&self) -> Option<NaiveDate> {
        self.until.map(|u| local_day(u - Duration::nanoseconds(1), self.zone))
    }
}

/// The start of the UTC hour `t` falls in: usage is counted by these hours.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t - Duration::seconds(t.timestamp().rem_euclid(3600)) - Duration::nanoseconds(t.timestamp_subsec_nanos().into())
}

/// `text` as a `--since` or `--until` bound, as a UTC instant (see [`Spec::resolve`]).
pub fn parse_bound(text: &str, side: Side, now: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, PeriodError> {
    Ok(Spec::parse(text)?.resolve(side, now, tz))
}

/// The first instant of local day `day` in `tz` (midnight, or the first hour after it when
/// summer time skips midnight, as in America/Santiago).
pub fn day_start(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut t = day.and_time(NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(local) = tz.from_local_datetime(&t).earliest() {
            return local.to_utc();
        }
        t += Duration::minutes(30);
    }
    Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN))
}

/// The local day in `tz` of the hour that starts at `utc_hour`.
pub fn local_day(utc_hour: DateTime<Utc>, tz: Tz) -> NaiveDate {
    utc_hour.with_timezone(&tz).date_naive()
}

/// A zone named on the command line (or in `TZ`): an IANA name, with or without the
/// leading `:` POSIX allows.
pub fn zone_named(name: &str) -> Result<Tz, PeriodError> {
    let n = name.trim().trim_start_matches(':');
    let n = match n {
        "" | "UTC0" | "utc" | "Z" => "UTC",
        n => n,
    };
    n.parse::<Tz>().map_err(|_| PeriodError::Zone(name.to_string()))
}

/// The zone reports use: `--timezone`, else `TZ`, else the system's (`/etc/localtime`,
/// `/etc/timezone`), else UTC.
pub fn zone(flag: Option<&str>) -> Result<Tz, PeriodError> {
    if let Some(name) = flag {
        return zone_named(name);
    }
    if let Ok(tz) = std::env::var("TZ") {
        return zone_named(&tz);
    }
    Ok(system_zone().unwrap_or(Tz::UTC))
}

fn system_zone() -> Option<Tz> {
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let text = target.to_string_lossy().into_owned();
        if let Some((_, name)) = text.split_once("zoneinfo/") {
            return zone_named(name).ok();
        }
    }
    std::fs::read_to_string("/etc/timezone").ok().and_then(|n| zone_named(&n).ok())
}

/// Whether every offset `tz` has between `from` and `to` is a whole number of hours, so
/// that UTC-hour cells fall into local days exactly.
pub fn whole_hour(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let whole = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc() % 3600 == 0;
    // Offsets change at most a few times a year: six-hourly samples see every change that
    // lasts longer than that (summer time lasts months).
    let mut t = from;
    while t < to {
        if !whole(t) {
            return false;
        }
        t += Duration::hours(6);
    }
    whole(to)
}

/// What a report says when its days cannot be exact: `None` for whole-hour zones.
pub fn offset_note(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<String> {
    (!whole_hour(tz, from, to)).then(|| {
        format!(
            "{} is not a whole number of hours from UTC: usage is kept by UTC hour, so an hour \
             that spans local midnight is counted in the day it starts in",
            tz.name()
        )
    })
}

/// Every calendar day from `first` to `last`, both included.
pub fn days(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |d| *d <= last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    const NOW: &str = "2026-11-30T15:30:00Z";

    #[test]
    fn dates_times_and_durations() {
        let now = utc(NOW);
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let b = |t: &str, side, tz| parse_bound(t, side, now, tz).unwrap();
        assert_eq!(b("2026-11-03", Side::Since, Tz::UTC), utc("2026-11-03T00:00:00Z"));
        assert_eq!(b("2026-11-03", Side::Until, Tz::UTC), utc("2026-11-04T00:00:00Z"), "the whole day");
        assert_eq!(b("2026-11-03", Side::Since, la), utc("2026-11-03T08:00:00Z"), "local midnight");
        assert_eq!(b("2026-07-03", Side::Since, la), utc("2026-07-03T07:00:00Z"), "summer time");
        assert_eq!(b("2026-11-03T09:00:00Z", Side::Since, la), utc("2026-11-03T09:00:00Z"));
        assert_eq!(b("2026-11-03T01:00:00-08:00", Side::Until, Tz::UTC), utc("2026-11-03T09:00:00Z"));
        assert_eq!(b("7d", Side::Since, la), utc("2026-11-23T15:30:00Z"));
        assert_eq!(b("1000y", Side::Since, la), utc("1026-11-23T15:30:00Z"), "the longest duration taken");
        assert_eq!(b("12h", Side::Since, Tz::UTC), utc("2026-11-30T03:30:00Z"));
        assert_eq!(b(" 1w 2d ", Side::Until, Tz::UTC), utc("2026-11-21T15:30:00Z"));
    }

    #[test]
    fn anything_else_is_refused_with_what_is_accepted() {
        for bad in [
            "2026-13-45",
            "2026-02-30",
            "yesterday",
            "2026-11-5",
            "26-11-05",
            "2026/11/05",
            "7",
            "d7",
            "",
            "2026-11-03T25:00:00Z",
            "2026-11-03T09:00:00",
            "-7d",
            "now",
            "300000y",
            "99999999999999d",
        ] {
            let err = Spec::parse(bad).unwrap_err();
            assert!(err.to_string().contains("use YYYY-MM-DD"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn local_days_and_whole_hour_zones() {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(local_day(utc("2026-11-04T07:00:00Z"), la), NaiveDate::from_ymd_opt(2026, 11, 3).unwrap());
        assert_eq!(local_day(utc("2026-11-04T08:00:00Z"), la), NaiveDate::from_ymd_opt(2026, 11, 4).unwrap());
        assert_eq!(local_day(utc("2026-11-03T18:00:00Z"), kolkata), NaiveDate::from_ymd_opt(2026, 11, 3).unwrap());
        assert_eq!(local_day(utc("2026-11-03T19:00:00Z"), kolkata), NaiveDate::from_ymd_opt(2026, 11, 4).unwrap());
        let (from, to) = (utc("2026-01-01T00:00:00Z"), utc("2026-12-31T23:00:00Z"));
        for (zone, whole) in [
            ("UTC", true),
            ("America/Los_Angeles", true),
            ("Europe/Paris", true),
            ("Asia/Tokyo", true),
            ("Asia/Kolkata", false),
            ("Asia/Kathmandu", false),
            ("America/St_Johns", false),
            ("Australia/Adelaide", false),
            // +10:30 in winter, +11 in summer: half an hour of summer time.
            ("Australia/Lord_Howe", false),
        ] {
            let tz: Tz = zone.parse().unwrap();
            assert_eq!(whole_hour(tz, from, to), whole, "{zone}");
            assert_eq!(offset_note(tz, from, to).is_some(), !whole, "{zone}");
        }
    }

    #[test]
    fn zone_names() {
        assert_eq!(zone_named(":Europe/Paris").unwrap(), Tz::Europe__Paris);
        assert_eq!(zone_named("UTC").unwrap(), Tz::UTC);
        assert_eq!(zone(Some("Asia/Tokyo")).unwrap(), Tz::Asia__Tokyo);
        let err = zone(Some("Mars/Olympus")).unwrap_err();
        assert!(err.to_string().contains("IANA name"), "{err}");
    }

    #[test]
    fn a_period_in_a_zone() {
        let now = utc(NOW);
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let d = |s: &str| Spec::parse(s).unwrap();
        let p = Period::new(Some(&d("2026-11-03")), Some(&d("2026-11-04")), la, now).unwrap();
        assert_eq!((p.since, p.until), (Some(utc("2026-11-03T08:00:00Z")), Some(utc("2026-11-05T08:00:00Z"))));
        assert_eq!(p.first_day(), NaiveDate::from_ymd_opt(2026, 11, 3));
        assert_eq!(p.last_day(), NaiveDate::from_ymd_opt(2026, 11, 4));
        assert!(p.contains(utc("2026-11-05T07:00:00Z")) && !p.contains(utc("2026-11-05T08:00:00Z")));
        assert!(!p.contains(utc("2026-11-03T07:00:00Z")));
        let err = Period::new(Some(&d("2026-11-04")), Some(&d("2026-11-03")), Tz::UTC, now).unwrap_err();
        assert!(err.to_string().contains("the period is empty"), "{err}");
        let open = Period::new(Some(&d("7d")), None, Tz::UTC, now).unwrap();
        assert_eq!(open.first_day(), NaiveDate::from_ymd_opt(2026, 11, 23));
        assert_eq!(open.last_day(), None);

        // Times and durations inside an hour take in the whole hour (usage is kept by UTC
        // hour), and a time given says so; a date in a whole-hour zone is whole hours.
        let p = Period::new(Some(&d("2026-11-20T10:30:00Z")), Some(&d("2026-11-20T12:15:00+01:00")), la, now).unwrap();
        assert_eq!((p.since, p.until), (Some(utc("2026-11-20T10:00:00Z")), Some(utc("2026-11-20T12:00:00Z"))));
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes[0].contains("--since 2026-11-20T10:30:00Z counts the whole hour (from 2026-11-20T10:00Z)"));
        // 100 minutes before 15:30 is 13:50: until the end of that hour, without a note.
        let p = Period::new(Some(&d("2026-11-20T10:00:00Z")), Some(&d("100m")), Tz::UTC, now).unwrap();
        assert_eq!(p.until, Some(utc("2026-11-30T14:00:00Z")));
        assert!(p.notes.is_empty(), "without a note: {:?}", p.notes);
        assert!(Period::new(Some(&d("2026-11-20T10:30:00Z")), Some(&d("2026-11-20T10:20:00Z")), Tz::UTC, now).is_err());
    }

    #[test]
    fn every_day_in_a_range() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let all: Vec<NaiveDate> = days(d("2026-02-27"), d("2026-03-02")).collect();
        assert_eq!(all, [d("2026-02-27"), d("2026-02-28"), d("2026-03-01"), d("2026-03-02")]);
        assert_eq!(days(d("2026-03-02"), d("2026-03-01")).count(), 0);
    }
}
