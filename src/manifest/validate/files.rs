//! `[[file]]` entries: paths, sources, templates, modes and owners.

use super::*;

impl super::Validator<'_> {
    pub(super) fn files(&mut self, file: &str, raw_files: &[raw::RawFile]) -> Vec<FileSpec> {
        let mut out: Vec<FileSpec> = Vec::new();
        for f in raw_files {
            let path = match HostPath::new(f.path.get()) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.err(
                        file,
                        f.path.span(),
                        format!(
                            "file path `{}` is not a normalised absolute path",
                            f.path.get().escape_debug()
                        ),
                    )
                    .label = Some(why.into());
                    None
                }
            };
            if let Some(p) = &path
                && out.iter().any(|o| &o.path == p)
            {
                self.err(
                    file,
                    f.path.span(),
                    format!("file `{p}` is listed twice in this table"),
                )
                .label = Some("files are keyed by path".into());
            }
            let bytes: Option<Arc<[u8]>> = match (&f.content, &f.source) {
                (Some(c), None) => Some(Arc::from(c.get().as_bytes())),
                (None, Some(s)) => self.repo_file(file, s, "source", true).flatten(),
                (Some(c), Some(_)) => {
                    self.err(
                        file,
                        c.span(),
                        "a file takes exactly one of `content` and `source`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.err(
                        file,
                        f.path.span(),
                        format!("file `{}` has neither `content` nor `source`", f.path.get()),
                    )
                    .help = Some("add content = \"...\" or source = \"files/...\"".into());
                    None
                }
            };
            let body = bytes.and_then(|b| {
                if !f.template {
                    return Some(FileBody::Literal(b));
                }
                let span = f
                    .content
                    .as_ref()
                    .or(f.source.as_ref())
                    .map_or(f.path.span(), Sp::span);
                let Ok(text) = std::str::from_utf8(&b) else {
                    self.err(file, span, "a template must be UTF-8 text");
                    return None;
                };
                match Template::parse(text) {
                    Ok(t) => Some(FileBody::Template(Arc::new(t))),
                    Err(e) => {
                        let d = self.err(file, span, e.to_string());
                        if let TemplateError::UnknownVariable(_) = e {
                            d.help = Some(format!("templates may use {VARIABLES}"));
                        }
                        None
                    }
                }
            });
            let mode = match &f.mode {
                None => Some(0o644),
                Some(m) => match u32::from_str_radix(m.get(), 8) {
                    Ok(n) if n <= 0o7777 && (3..=4).contains(&m.get().len()) => Some(n),
                    _ => {
                        self.err(file, m.span(), format!("invalid mode `{}`", m.get()))
                            .label = Some("write an octal mode such as \"0644\"".into());
                        None
                    }
                },
            };
            for (who, v) in [("owner", &f.owner), ("group", &f.group)] {
                if let Some(v) = v
                    && crate::names::check_name(v.get()).is_err()
                {
                    self.err(file, v.span(), format!("invalid {who} `{}`", v.get()))
                        .label = Some("use a user or group name".into());
                }
            }
            if let (Some(path), Some(body), Some(mode)) = (path, body, mode) {
                out.push(FileSpec {
                    path,
                    body,
                    mode,
                    owner: f.owner.as_ref().map(|o| o.get().clone()),
                    group: f.group.as_ref().map(|o| o.get().clone()),
                    sensitive: f.sensitive,
                    on_change: f
                        .on_change
                        .as_ref()
                        .map(|c| c.get().clone())
                        .filter(|c| !c.trim().is_empty()),
                    origin: Location {
                        file: file.to_owned(),
                        span: f.path.span(),
                    },
                });
            }
        }
        out
    }
}
