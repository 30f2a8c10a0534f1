//! `[rollout]`, `[[window]]` and `[[freeze]]`: waves, budgets, bakes and when changes may start.

use super::*;

impl super::Validator<'_> {
    pub(super) fn rollout(&mut self, file: &str, r: &raw::RawRollout) -> Rollout {
        let mut out = Rollout::default();
        if let Some(waves) = &r.waves {
            let mut targets = Vec::new();
            let mut last: Option<(CountOrPercent, std::ops::Range<usize>)> = None;
            for w in waves.get() {
                let target = match *w.get() {
                    CountOrPercent::Count(0) | CountOrPercent::Percent(0) => {
                        self.err(file, w.span(), "a wave must contain at least one host")
                            .label = Some("use 1 or more, or 1% to 100%".into());
                        continue;
                    }
                    CountOrPercent::Count(n) => WaveTarget::Count(n),
                    CountOrPercent::Percent(p) => WaveTarget::Percent(p),
                };
                if let Some((prev, _)) = &last {
                    let decreases = match (prev, w.get()) {
                        (CountOrPercent::Count(a), CountOrPercent::Count(b)) => b < a,
                        (CountOrPercent::Percent(a), CountOrPercent::Percent(b)) => b < a,
                        _ => false,
                    };
                    if decreases {
                        self.err(
                            file,
                            w.span(),
                            format!("waves must not decrease: {} comes after {prev}", w.get()),
                        )
                        .help = Some("each wave is a cumulative target: [1, \"25%\", \"100%\"]".into());
                    }
                }
                last = Some((*w.get(), w.span()));
                targets.push(target);
            }
            if !targets.is_empty() {
                out.waves = targets;
                out.waves_at = Some(Location {
                    file: file.to_owned(),
                    span: waves.span(),
                });
            }
        }
        if let Some(m) = &r.max_parallel {
            if *m.get() == 0 {
                self.err(file, m.span(), "`max_parallel` must be at least 1");
            } else {
                out.max_parallel = *m.get();
            }
        }
        if let Some(m) = &r.max_failures {
            out.max_failures = *m.get();
        }
        if let Some(b) = self.duration(file, &r.bake) {
            out.bake = b;
        }
        if let Some(o) = &r.on_failure {
            out.on_failure = *o.get();
        }
        out.health_command = r
            .health_command
            .as_ref()
            .map(|c| c.get().clone())
            .filter(|c| !c.trim().is_empty());
        if let Some(s) = self.duration(file, &r.promotion_soak) {
            out.promotion_soak = s;
        }
        if let Some(s) = self.duration(file, &r.min_interval) {
            out.min_interval = s;
        }
        let limit = r
            .max_duration
            .as_ref()
            .filter(|d| !d.get().trim().is_empty())
            .cloned();
        if let Some(d) = self.duration(file, &limit) {
            if d.is_zero() {
                if let Some(s) = &limit {
                    self.err(file, s.span(), "`max_duration` must be longer than 0s")
                        .help = Some("leave it out (or \"\") for no limit".into());
                }
            } else {
                out.max_duration = Some(d);
            }
        }
        if let Some(l) = &r.host_limits {
            let mut percent = |key: &str, v: &Option<Str>, max: u32| -> Option<u32> {
                let v = v.as_ref()?;
                let n = v
                    .get()
                    .trim()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<u32>().ok());
                match n {
                    Some(n) if (1..=max).contains(&n) => Some(n),
                    _ => {
                        self.err(
                            file,
                            v.span(),
                            format!("invalid `host_limits.{key}` `{}`", v.get()),
                        )
                        .help = Some(format!("write a percentage from 1% to {max}%, such as \"80%\""));
                        None
                    }
                }
            };
            out.host_limits = crate::manifest::model::HostLimits {
                // Load per CPU can exceed 100%.
                cpu: percent("cpu", &l.cpu, 1000),
                memory: percent("memory", &l.memory, 100).map(|n| n as u8),
                disk: percent("disk", &l.disk, 100).map(|n| n as u8),
            };
        }
        out
    }

    pub(super) fn clock_time(&mut self, file: &str, s: &Str, key: &str) -> Option<jiff::civil::Time> {
        let ok = s.get().len() == 5 && s.get().as_bytes()[2] == b':';
        match jiff::civil::Time::strptime("%H:%M", s.get()) {
            Ok(t) if ok => Some(t),
            _ => {
                self.err(file, s.span(), format!("invalid `{key}` time `{}`", s.get()))
                    .label = Some("write a 24-hour time such as \"02:00\"".into());
                None
            }
        }
    }

    pub(super) fn window(&mut self, file: &str, w: &raw::RawWindow) -> Option<Window> {
        let mut ok = true;
        let days = w.days.as_ref().map(|days| {
            let mut out = Vec::new();
            for d in days {
                use jiff::civil::Weekday::*;
                let day = match d.get().to_ascii_lowercase().as_str() {
                    "mon" => Monday,
                    "tue" => Tuesday,
                    "wed" => Wednesday,
                    "thu" => Thursday,
                    "fri" => Friday,
                    "sat" => Saturday,
                    "sun" => Sunday,
                    _ => {
                        self.err(file, d.span(), format!("invalid day `{}`", d.get()))
                            .label = Some("use mon, tue, wed, thu, fri, sat or sun".into());
                        ok = false;
                        continue;
                    }
                };
                out.push(day);
            }
            out
        });
        let start = self.clock_time(file, &w.start, "start");
        let length = match (&w.duration, &w.end) {
            (Some(_), Some(e)) => {
                self.err(file, e.span(), "a window takes `duration` or `end`, not both");
                None
            }
            (None, None) => {
                self.err(file, w.start.span(), "a window needs `duration` or `end`")
                    .help = Some("add duration = \"3h\" or end = \"05:00\"".into());
                None
            }
            (Some(_), None) => self.duration(file, &w.duration).map(|d| {
                WindowLength::Duration(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
            }),
            (None, Some(e)) => match (self.clock_time(file, e, "end"), start) {
                (Some(end), Some(s)) if end == s => {
                    self.err(
                        file,
                        e.span(),
                        "a window whose `end` equals its `start` has no length",
                    )
                    .help = Some("for a window of a whole day, write duration = \"24h\"".into());
                    None
                }
                (end, _) => end.map(WindowLength::End),
            },
        };
        let tz_name = w.timezone.as_ref().map_or("UTC", |t| t.get().as_str());
        let timezone = match jiff::tz::TimeZone::get(tz_name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let span = w.timezone.as_ref().map_or(w.start.span(), Sp::span);
                self.err(file, span, format!("unknown time zone `{tz_name}`"))
                    .label = Some("use an IANA name such as \"Europe/Berlin\"".into());
                None
            }
        };
        let window = Window {
            days,
            start: start?,
            length: length?,
            timezone: timezone?,
        };
        if let Err(e) = window_length_ok(&window) {
            let span = w
                .duration
                .as_ref()
                .or(w.end.as_ref())
                .map_or(w.start.span(), Sp::span);
            self.err(file, span, format!("invalid window: {e}"));
            return None;
        }
        ok.then_some(window)
    }

    pub(super) fn freeze(&mut self, file: &str, fr: &raw::RawFreeze) -> Option<Freeze> {
        let mut ts = |s: &Str, key: &str| match s.get().parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(_) => {
                self.err(file, s.span(), format!("invalid `{key}` date `{}`", s.get()))
                    .label = Some("write an RFC 3339 date such as \"2026-12-20T00:00:00Z\"".into());
                None
            }
        };
        let from = ts(&fr.from, "from");
        let until = ts(&fr.until, "until");
        let (from, until) = (from?, until?);
        if until <= from {
            self.err(
                file,
                fr.until.span(),
                "a freeze's `until` must be after its `from`",
            );
            return None;
        }
        Some(Freeze {
            from,
            until,
            reason: fr.reason.clone().unwrap_or_default(),
        })
    }
}
