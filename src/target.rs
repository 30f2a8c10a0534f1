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
    #[error("no host matches the targeting flags")]
    NothingMatches,
}

#[derive(Debug, Default)]
pub struct Selector {
    envs: Vec<String>,
    hosts: Vec<GlobMatcher>,
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
            labels,
            exclude: globs("exclude", exclude)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.envs.is_empty() && self.hosts.is_empty() && self.labels.is_empty() && self.exclude.is_empty()
    }

    pub fn matches(&self, h: &DesiredHost) -> bool {
        let name = h.name.as_str();
        (self.envs.is_empty() || self.envs.iter().any(|e| e == h.environment.as_str()))
            && (self.hosts.is_empty() || self.hosts.iter().any(|g| g.is_match(name)))
            && (self.labels.is_empty() || self.labels.iter().any(|(k, v)| h.labels.get(k) == Some(v)))
            && !self.exclude.iter().any(|g| g.is_match(name))
    }
}
