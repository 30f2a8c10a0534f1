//! Runtimes (`runtimes/*.toml`) and the versions environments and hosts pin.

use super::*;

impl super::Validator<'_> {
    pub(super) fn runtime_pins(
        &mut self,
        file: &str,
        pins: &BTreeMap<Str, Sp<raw::RuntimePin>>,
        runtimes: &BTreeMap<RuntimeName, Runtime>,
    ) -> BTreeMap<RuntimeName, Pin> {
        let mut out = BTreeMap::new();
        for (name, pin) in pins {
            let Some(rt) = runtimes
                .iter()
                .find(|(n, _)| n.as_str() == name.get())
                .map(|(_, r)| r)
            else {
                if self.runtime_files.contains(name.get()) {
                    continue;
                }
                let hint = closest(name.get(), runtimes.keys().map(RuntimeName::as_str))
                    .map_or("no runtimes/<name>.toml defines it".to_owned(), |c| {
                        format!("did you mean `{c}`?")
                    });
                self.err(file, name.span(), format!("unknown runtime `{}`", name.get()))
                    .label = Some(hint);
                continue;
            };
            match pin.get() {
                raw::RuntimePin::Remove => {
                    out.insert(rt.name.clone(), Pin::Remove);
                }
                raw::RuntimePin::Version(v) => match rt.versions.keys().find(|k| k.as_str() == v) {
                    Some(ver) => {
                        out.insert(rt.name.clone(), Pin::Version(ver.clone()));
                    }
                    None if self.broken_versions.contains(&(rt.name.to_string(), v.clone())) => {}
                    None => {
                        let known: Vec<&str> = rt.versions.keys().map(Version::as_str).collect();
                        self.err(
                            file,
                            pin.span(),
                            format!("runtime `{}` has no version `{v}`", rt.name),
                        )
                        .label = Some(format!("known versions: {}", known.join(", ")));
                        if let Some(d) = self.diags.last_mut() {
                            d.help = Some(format!(
                                "add a [[version]] to runtimes/{}.toml or pick a known one",
                                rt.name
                            ));
                        }
                    }
                },
            }
        }
        out
    }

    pub(super) fn runtime(
        &mut self,
        f: &ManifestFile,
        name: RuntimeName,
        r: &raw::RawRuntime,
    ) -> Option<Runtime> {
        let file = f.path.as_str();
        let mut versions = BTreeMap::new();
        if r.versions.is_empty() {
            self.diags.push(
                Diagnostic::new(format!("runtime `{name}` has no [[version]]"))
                    .at(file, 0..0)
                    .help("add a [[version]] table with version, artifact and sha256"),
            );
        }
        for v in &r.versions {
            let version = self.name::<Version>(file, &v.version, "version");
            let sha_ok = v.sha256.get().len() == 64 && v.sha256.get().bytes().all(|b| b.is_ascii_hexdigit());
            if !sha_ok {
                self.err(file, v.sha256.span(), "`sha256` must be 64 hexadecimal digits")
                    .label = Some(format!("{} characters given", v.sha256.get().chars().count()));
            }
            let artifact = self.artifact_ref(file, &v.artifact, "artifact");
            let signature = match &v.signature {
                Some(s) => self.artifact_ref(file, s, "signature"),
                None => match &artifact {
                    Some(ArtifactRef::Url(u)) => Some(ArtifactRef::Url(format!("{u}.minisig"))),
                    Some(ArtifactRef::Repo(p)) => {
                        // The default signature sits beside the artifact; it must exist when
                        // signatures are required, which the apply step checks against trust.
                        Some(ArtifactRef::Repo(format!("{p}.minisig")))
                    }
                    None => None,
                },
            };
            let complete = version.is_some() && artifact.is_some() && signature.is_some() && sha_ok;
            if !complete {
                self.broken_versions
                    .insert((name.to_string(), v.version.get().clone()));
            }
            if let (Some(version), Some(artifact), Some(signature), true) =
                (version, artifact, signature, sha_ok)
            {
                if versions.contains_key(&version) {
                    self.err(
                        file,
                        v.version.span(),
                        format!("version `{version}` is defined twice"),
                    );
                    continue;
                }
                versions.insert(
                    version.clone(),
                    RuntimeVersion {
                        version,
                        artifact,
                        sha256: v.sha256.get().to_ascii_lowercase(),
                        signature,
                    },
                );
            }
        }
        let health = r.health.as_ref().map(|h| Health {
            command: h.command.get().clone(),
            timeout: self
                .duration(file, &h.timeout)
                .unwrap_or(std::time::Duration::from_secs(30)),
            retries: h.retries.unwrap_or(0),
            interval: self
                .duration(file, &h.interval)
                .unwrap_or(std::time::Duration::from_secs(1)),
        });
        let hooks = Hooks {
            activate: r.hooks.activate.as_ref().map(|s| s.get().clone()),
            remove: r.hooks.remove.as_ref().map(|s| s.get().clone()),
        };
        Some(Runtime {
            name,
            description: r.description.clone(),
            versions,
            health,
            hooks,
        })
    }
}
