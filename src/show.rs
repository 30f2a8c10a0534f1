//! `flotilla show HOST`: one host's resolved desired state, each value with the layer it came
//! from, so "why does this host get that?" has a one-command answer.

use std::fmt::Write as _;

use crate::duration::format_duration;
use crate::manifest::model::Pin;
use crate::resolve::{DesiredHost, Layer, Sourced};

fn row(out: &mut String, key: &str, value: &str, from: &Layer) {
    let _ = writeln!(out, "  {key:<16} {value:<40} {from}");
}

pub fn render(h: &DesiredHost, origin: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "host {} (defined in {origin})", h.name);
    row(&mut out, "environment", h.environment.as_str(), &Layer::Host);
    row(&mut out, "address", &h.address, &Layer::Host);
    if !h.labels.is_empty() {
        let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        row(&mut out, "labels", &labels.join(", "), &Layer::Host);
    }
    if h.canary {
        row(&mut out, "canary", "true", &Layer::Host);
    }
    if h.decommission {
        row(
            &mut out,
            "decommission",
            "true (everything Flotilla manages is removed)",
            &Layer::Host,
        );
    }
    let s = &h.settings;
    let _ = writeln!(out, "\nsettings:");
    let opt = |o: &Sourced<Option<String>>| o.value.clone().unwrap_or_else(|| "(ssh default)".into());
    let transport = match s.transport.value {
        crate::manifest::model::TransportKind::Ssh => "ssh",
        crate::manifest::model::TransportKind::Local => "local",
    };
    let become_ = match s.become_.value {
        crate::manifest::model::Become::None => "none",
        crate::manifest::model::Become::Sudo => "sudo",
    };
    row(&mut out, "transport", transport, &s.transport.from);
    row(&mut out, "user", &s.user.value, &s.user.from);
    row(&mut out, "port", &s.port.value.to_string(), &s.port.from);
    row(&mut out, "become", become_, &s.become_.from);
    row(&mut out, "root", &s.root.value, &s.root.from);
    row(
        &mut out,
        "runtimes_dir",
        s.runtimes_dir.value.as_str(),
        &s.runtimes_dir.from,
    );
    row(
        &mut out,
        "state_dir",
        s.state_dir.value.as_str(),
        &s.state_dir.from,
    );
    row(
        &mut out,
        "identity_file",
        &opt(&s.identity_file),
        &s.identity_file.from,
    );
    row(&mut out, "known_hosts", &opt(&s.known_hosts), &s.known_hosts.from);
    row(
        &mut out,
        "connect_timeout",
        &format_duration(s.connect_timeout.value),
        &s.connect_timeout.from,
    );
    row(
        &mut out,
        "command_timeout",
        &format_duration(s.command_timeout.value),
        &s.command_timeout.from,
    );
    row(
        &mut out,
        "keep_versions",
        &s.keep_versions.value.to_string(),
        &s.keep_versions.from,
    );

    let _ = writeln!(out, "\nruntimes:");
    if h.runtimes.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (name, pin) in &h.runtimes {
        let v = match &pin.value {
            Pin::Version(v) => v.to_string(),
            Pin::Remove => "false (removed where Flotilla manages it)".into(),
        };
        row(&mut out, name.as_str(), &v, &pin.from);
    }
    let _ = writeln!(out, "\nfiles:");
    if h.files.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (path, f) in &h.files {
        let d = &f.value;
        let mut desc = format!("mode {:04o}", d.mode);
        if let Some(o) = &d.owner {
            let _ = write!(desc, ", owner {o}");
        }
        if let Some(g) = &d.group {
            let _ = write!(desc, ", group {g}");
        }
        let _ = write!(desc, ", sha256 {}", &d.sha256[..12]);
        if d.sensitive {
            desc.push_str(", sensitive");
        }
        let _ = writeln!(out, "  {path}");
        row(&mut out, "", &desc, &f.from);
        if let Some(cmd) = &d.on_change {
            let _ = writeln!(out, "  {:<16} on_change: {cmd}", "");
        }
    }
    if h.decommission {
        let _ = writeln!(
            out,
            "\n(decommissioned: the runtimes and files above are not applied)"
        );
    }
    out
}
