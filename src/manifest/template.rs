//! File templates: `{{ host.name }}`-style substitution with a closed set of variables. The
//! set is closed on purpose: a template can only reveal what the plan already shows about a
//! host, and an unknown variable is a validation error rather than an empty string on a
//! production host.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    HostName,
    HostAddress,
    HostEnvironment,
    HostLabel(String),
    FleetName,
}

pub const VARIABLES: &str = "host.name, host.address, host.environment, host.labels.KEY and fleet.name";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable `{0}`")]
    UnknownVariable(String),
    #[error("`{{{{` is not closed by `}}}}`")]
    Unclosed,
}

/// What a template may refer to, for one host.
pub struct Vars<'a> {
    pub host_name: &'a str,
    pub host_address: &'a str,
    pub host_environment: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub fleet_name: &'a str,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = after[..close].trim();
            let var = match name {
                "host.name" => Var::HostName,
                "host.address" => Var::HostAddress,
                "host.environment" => Var::HostEnvironment,
                "fleet.name" => Var::FleetName,
                _ => match name.strip_prefix("host.labels.") {
                    Some(key) if crate::names::check_name(key).is_ok() => Var::HostLabel(key.to_owned()),
                    _ => return Err(TemplateError::UnknownVariable(name.to_owned())),
                },
            };
            segments.push(Segment::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template { segments })
    }

    /// Label keys the template reads, so a host lacking one is caught before anything runs.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(Var::HostLabel(k)) => Some(k.as_str()),
            _ => None,
        })
    }

    /// Renders for one host; `Err` names the first label the host lacks.
    pub fn render(&self, vars: &Vars<'_>) -> Result<String, String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(Var::HostName) => out.push_str(vars.host_name),
                Segment::Var(Var::HostAddress) => out.push_str(vars.host_address),
                Segment::Var(Var::HostEnvironment) => out.push_str(vars.host_environment),
                Segment::Var(Var::FleetName) => out.push_str(vars.fleet_name),
                Segment::Var(Var::HostLabel(k)) => {
                    out.push_str(vars.labels.get(k).ok_or_else(|| k.clone())?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(labels: &BTreeMap<String, String>) -> Vars<'_> {
        Vars {
            host_name: "web-01",
            host_address: "10.0.0.1",
            host_environment: "prod",
            labels,
            fleet_name: "acme",
        }
    }

    #[test]
    fn substitutes_every_variable() {
        let labels = BTreeMap::from([("role".to_owned(), "web".to_owned())]);
        let t = Template::parse(
            "{{host.name}} {{ host.address }} {{ host.environment }} {{ host.labels.role }} {{ fleet.name }}\n",
        )
        .unwrap();
        assert_eq!(
            t.render(&vars(&labels)).unwrap(),
            "web-01 10.0.0.1 prod web acme\n"
        );
    }

    #[test]
    fn rejects_unknown_variables_and_unclosed_braces() {
        assert_eq!(
            Template::parse("{{ host.secret }}"),
            Err(TemplateError::UnknownVariable("host.secret".into()))
        );
        assert_eq!(
            Template::parse("{{ env.HOME }}"),
            Err(TemplateError::UnknownVariable("env.HOME".into()))
        );
        assert_eq!(Template::parse("x {{ host.name"), Err(TemplateError::Unclosed));
    }

    #[test]
    fn missing_label_is_reported_by_name() {
        let t = Template::parse("{{ host.labels.zone }}").unwrap();
        assert_eq!(t.render(&vars(&BTreeMap::new())), Err("zone".to_owned()));
        assert_eq!(t.labels().collect::<Vec<_>>(), ["zone"]);
    }
}
