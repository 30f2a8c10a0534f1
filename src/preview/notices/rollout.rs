//! Notices about how a change would roll out: rollout policy (waves, budgets, bakes, gates)
//! and the schedule (windows and freezes).

use super::*;

impl Cx<'_> {
    pub(super) fn policy(&self, out: &mut Vec<Notice>) {
        let (bp, hp) = (&self.base.fleet.promotion, &self.head.fleet.promotion);
        if bp != hp {
            self.push(
                out,
                NoticeKind::Rollout,
                format!(
                    "rollout: fleet.promotion {} -> {}",
                    shown(&names(bp)),
                    shown(&names(hp))
                ),
                self.at("flotilla.toml", &[Seg::Key("fleet"), Seg::Key("promotion")]),
            );
        }
        for (env, b, h) in self.env_pairs() {
            let (b, h) = match (b, h) {
                (Some(b), Some(h)) => (b, h),
                (b, h) => {
                    let (verb, side) = if h.is_some() {
                        ("added", Side::Head)
                    } else {
                        ("removed", Side::Base)
                    };
                    let fleet = if h.is_some() { self.head } else { self.base };
                    let place = line_of(&fleet.sources, &env_file(env), &[]).map(|p| (p, side));
                    let _ = b;
                    self.push(
                        out,
                        NoticeKind::Environment,
                        format!("environment {} {verb}", code(env)),
                        place,
                    );
                    continue;
                }
            };
            if b.auto_apply != h.auto_apply {
                self.push(
                    out,
                    NoticeKind::Rollout,
                    format!(
                        "rollout: {} auto_apply {} -> {}",
                        code(env),
                        b.auto_apply,
                        h.auto_apply
                    ),
                    self.at(&env_file(env), &[Seg::Key("auto_apply")]),
                );
            }
            for (key, before, after) in rollout_diff(&b.rollout, &h.rollout) {
                self.push(
                    out,
                    NoticeKind::Rollout,
                    format!("rollout: {} {key} {before} -> {after}", code(env)),
                    self.at(&env_file(env), &[Seg::Key("rollout"), Seg::Key(key)]),
                );
            }
        }
    }

    pub(super) fn schedule(&self, out: &mut Vec<Notice>) {
        for (env, b, h) in self.env_pairs() {
            let (Some(b), Some(h)) = (b, h) else { continue };
            let file = env_file(env);
            let n = b.windows.len().max(h.windows.len());
            for i in 0..n {
                let (bw, hw) = (b.windows.get(i), h.windows.get(i));
                if bw == hw {
                    continue;
                }
                self.push(
                    out,
                    NoticeKind::Schedule,
                    format!(
                        "window: {} [[window]] #{}: {} -> {}",
                        code(env),
                        i + 1,
                        bw.map_or("none".into(), window_text),
                        hw.map_or("none".into(), window_text)
                    ),
                    self.at(&file, &[Seg::Key("window"), Seg::Index(i)]),
                );
            }
            let n = b.freezes.len().max(h.freezes.len());
            for i in 0..n {
                let (bf, hf) = (b.freezes.get(i), h.freezes.get(i));
                if bf == hf {
                    continue;
                }
                self.push(
                    out,
                    NoticeKind::Schedule,
                    format!(
                        "freeze: {} [[freeze]] #{}: {} -> {}",
                        code(env),
                        i + 1,
                        bf.map_or("none".into(), freeze_text),
                        hf.map_or("none".into(), freeze_text)
                    ),
                    self.at(&file, &[Seg::Key("freeze"), Seg::Index(i)]),
                );
            }
        }
    }
}

/// Every `[rollout]` key whose value differs: (key, before, after).
fn rollout_diff(b: &Rollout, h: &Rollout) -> Vec<(&'static str, String, String)> {
    let d = |x: std::time::Duration| code(&crate::duration::format_duration(x));
    let pairs = [
        ("waves", shown(&b.waves), shown(&h.waves)),
        (
            "max_parallel",
            b.max_parallel.to_string(),
            h.max_parallel.to_string(),
        ),
        (
            "max_failures",
            code(&b.max_failures.to_string()),
            code(&h.max_failures.to_string()),
        ),
        ("bake", d(b.bake), d(h.bake)),
        ("on_failure", shown(&b.on_failure), shown(&h.on_failure)),
        ("promotion_soak", d(b.promotion_soak), d(h.promotion_soak)),
        ("min_interval", d(b.min_interval), d(h.min_interval)),
        (
            "max_duration",
            b.max_duration.map_or("(none)".into(), d),
            h.max_duration.map_or("(none)".into(), d),
        ),
        ("host_limits", shown(&b.host_limits), shown(&h.host_limits)),
    ];
    pairs.into_iter().filter(|(_, x, y)| x != y).collect()
}

/// "sat,sun 02:00 for 3h Europe/Berlin".
fn window_text(w: &Window) -> String {
    let days = w.days.as_ref().map_or("every day".to_owned(), |d| {
        d.iter()
            .map(|d| format!("{d:?}").to_lowercase()[..3].to_owned())
            .collect::<Vec<_>>()
            .join(",")
    });
    let length = match w.length {
        WindowLength::Duration(d) => format!("for {}", crate::duration::format_duration(d.unsigned_abs())),
        WindowLength::End(t) => format!("until {}", t.strftime("%H:%M")),
    };
    code(&format!(
        "{days} {} {length} {}",
        w.start.strftime("%H:%M"),
        w.timezone.iana_name().unwrap_or("UTC")
    ))
}

/// "2026-12-20T00:00:00Z..2027-01-04T00:00:00Z (year-end freeze)".
fn freeze_text(f: &Freeze) -> String {
    code(&format!("{}..{} ({})", f.from, f.until, f.reason))
}
