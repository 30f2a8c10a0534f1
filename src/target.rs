//! Targeting flags (`--env`, `--host`, `--label`, `--exclude`): repeats of one flag widen,
//! different flags narrow, `--exclude` applies last (DESIGN §11).

use globset::{Glob, GlobMatcher};

use crate::manifest::Fleet;
use crate::resolve::DesiredHost;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--env {0}: no such environment (known: {1})")]
    UnknownEnv(String, String),
    #[error("--{flag} {pattern}: not a valid glob: {source}")]
    BadGlob {
        flag: &'static str,
        pattern: String,
        source: globset::Error,
    },
    #[error("--label {0}: write it as KEY=VALUE")]
    BadLabel(String),
    /// The flags picked no host; `why` says which flag and, for a `--host` glob that matches
    /// only part of some names, the glob that would match them.
    #[error("no host matches the targeting flags: {why}")]
    NothingMatches { why: String },
}

#[derive(Debug, Default)]
pub struct Selector {
    envs: Vec<String>,
    hosts: Vec<GlobMatcher>,
    /// The `--host` patterns as given, for messages.
    host_patterns: Vec<String>,
    labels: Vec<(String, String)>,
    exclude: Vec<GlobMatcher>,
}

fn globs(flag: &'static str, patterns: &[String]) -> Result<Vec<GlobMatcher>, TargetError> {
    patterns
        .iter()
        .map(|p| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|source| TargetError::BadGlob {
                    flag,
                    pattern: p.clone(),
                    source,
                })
        })
        .collect()
}

impl Selector {
    pub fn new(
        fleet: &Fleet,
        envs: &[String],
        hosts: &[String],
        labels: &[String],
        exclude: &[String],
    ) -> Result<Selector, TargetError> {
        for e in envs {
            if !fleet.environments.keys().any(|k| k.as_str() == e) {
                let known: Vec<&str> = fleet.environments.keys().map(|k| k.as_str()).collect();
                return Err(TargetError::UnknownEnv(e.clone(), known.join(", ")));
            }
        }
        let labels = labels
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| TargetError::BadLabel(l.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Selector {
            envs: envs.to_vec(),
            hosts: globs("host", hosts)?,
            host_patterns: hosts.to_vec(),
            labels,
            exclude: globs("exclude", exclude)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.envs.is_empty() && self.hosts.is_empty() && self.labels.is_empty() && self.exclude.is_empty()
    }

    /// The hosts the flags pick, in the order given; picking none is an error (a typo must
    /// never plan or apply "nothing") that says why.
    pub fn select<'a>(&self, hosts: &'a [DesiredHost]) -> Result<Vec<&'a DesiredHost>, TargetError> {
        let picked: Vec<&DesiredHost> = hosts.iter().filter(|h| self.matches(h)).collect();
        if picked.is_empty() && !self.is_empty() {
            return Err(TargetError::NothingMatches {
                why: self.why_nothing(hosts),
            });
        }
        Ok(picked)
    }

    /// Which flag left nothing, in words.
    fn why_nothing(&self, hosts: &[DesiredHost]) -> String {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        if names.is_empty() {
            return "the fleet has no hosts".to_owned();
        }
        for (pattern, glob) in self.host_patterns.iter().zip(&self.hosts) {
            if names.iter().any(|n| glob.is_match(n)) {
                continue;
            }
            return host_hint(pattern, &names);
        }
        for (k, v) in &self.labels {
            if !hosts.iter().any(|h| h.labels.get(k) == Some(v)) {
                return format!("no host has the label {k}={v}");
            }
        }
        let before_exclude = hosts.iter().any(|h| {
            let name = h.name.as_str();
            (self.envs.is_empty() || self.envs.iter().any(|e| e == h.environment.as_str()))
                && (self.hosts.is_empty() || self.hosts.iter().any(|g| g.is_match(name)))
                && (self.labels.is_empty() || self.labels.iter().any(|(k, v)| h.labels.get(k) == Some(v)))
        });
        if before_exclude {
            return "--exclude left out every host the other flags picked".to_owned();
        }
        "each flag matches some host, but no host matches all of them (different flags narrow: \
         a host must match --env, --host and --label together; repeats of one flag widen)"
            .to_owned()
    }

    pub fn matches(&self, h: &DesiredHost) -> bool {
        let name = h.name.as_str();
        (self.envs.is_empty() || self.envs.iter().any(|e| e == h.environment.as_str()))
            && (self.hosts.is_empty() || self.hosts.iter().any(|g| g.is_match(name)))
            && (self.labels.is_empty() || self.labels.iter().any(|(k, v)| h.labels.get(k) == Some(v)))
            && !self.exclude.iter().any(|g| g.is_match(name))
    }
}

/// Why `--host PATTERN` matched no host name, and the glob that would have.
fn host_hint(pattern: &str, names: &[&str]) -> String {
    let mut out =
        format!("--host {pattern} matches no host name (a glob matches whole host names, not parts of them)");
    let listed = |found: &[&str]| {
        let mut shown: Vec<&str> = found.iter().take(3).copied().collect();
        if found.len() > 3 {
            shown.push("…");
        }
        shown.join(", ")
    };
    let has_glob = pattern.contains(['*', '?', '[', '{']);
    let prefixed: Vec<&str> = names.iter().copied().filter(|n| n.starts_with(pattern)).collect();
    let inside: Vec<&str> = names.iter().copied().filter(|n| n.contains(pattern)).collect();
    if !has_glob && !prefixed.is_empty() {
        out.push_str(&format!(
            "; to pick {}, write --host '{pattern}*'",
            listed(&prefixed)
        ));
    } else if !has_glob && !inside.is_empty() {
        out.push_str(&format!(
            "; to pick {}, write --host '*{pattern}*'",
            listed(&inside)
        ));
    } else if let Some(c) = crate::diagnostic::closest(pattern, names.iter().copied()) {
        out.push_str(&format!("; did you mean `{c}`?"));
    }
    out
}
