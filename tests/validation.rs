use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use flotilla::manifest::{LoadContext, ManifestFile, RepoEntry, RepoFiles};

#[derive(Clone, Default)]
struct MemRepo {
    files: BTreeMap<String, Vec<u8>>,
    symlinks: BTreeSet<String>,
}

impl RepoFiles for MemRepo {
    fn entry(&self, path: &str, read: bool) -> RepoEntry {
        if self.symlinks.contains(path) {
            return RepoEntry::Symlink;
        }
        if let Some(b) = self.files.get(path) {
            return RepoEntry::File(read.then(|| Arc::from(b.as_slice())));
        }
        let dir = format!("{path}/");
        if self.files.keys().chain(&self.symlinks).any(|k| k.starts_with(&dir)) {
            return RepoEntry::Directory;
        }
        RepoEntry::Missing
    }
}

fn run(m: &[(&str, &str)]) -> String {
    let files: Vec<ManifestFile> = m.iter().map(|(p, t)| ManifestFile { path: p.to_string(), text: t.to_string() }).collect();
    let mut repo = MemRepo::default();
    repo.files.insert("artifacts/g.tgz".into(), b"x".to_vec());
    repo.files.insert("files/motd".into(), b"hi".to_vec());
    repo.symlinks.insert("files/link".into());
    let dir = PathBuf::from("/srv/fleet");
    match flotilla::manifest::load(&files, &repo, &LoadContext { repo_dir: Some(&dir) }) {
        Ok(l) => match flotilla::resolve::resolve_all(&l.fleet) {
            Ok(_) => "OK".into(),
            Err(d) => flotilla::diagnostic::render(&d, &l.sources, false),
        },
        Err(f) => flotilla::diagnostic::render(&f.diagnostics, &f.sources, false),
    }
}

const FT: &str = "[fleet]\nname = \"acme\"\n";
const RT: &str = "[[version]]\nversion = \"1.0.0\"\nartifact = \"artifacts/g.tgz\"\nsha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"\n";
const ENV: &str = "[runtimes]\ngreeter = \"1.0.0\"\n";
const HOST: &str = "[[host]]\nname = \"web-01\"\nenvironment = \"staging\"\n";

fn case(name: &str, fleet: &str, env: &str, host: &str, rt: &str) {
    println!("===== {name}");
    println!("{}", run(&[("flotilla.toml", fleet), ("environments/staging.toml", env), ("hosts/a.toml", host), ("runtimes/greeter.toml", rt)]));
}

#[test]
fn explore() {
    case("ok", FT, ENV, HOST, RT);
    case("wavez", FT, &format!("{ENV}\n[rollout]\nwavez = [1]\n"), HOST, RT);
    case("dotted", FT, "[runtimes]\npython-3.11-ml = \"2.0.0\"\n", HOST, RT);
    case("dotted host", FT, ENV, &format!("{HOST}runtimes = {{ python-3.11-ml = \"2.0.0\" }}\n"), RT);
    case("dup host", FT, ENV, &format!("{HOST}\n{HOST}"), RT);
    case("dup addr", FT, ENV, &format!("{HOST}address = \"a\"\n[[host]]\nname = \"web-02\"\nenvironment = \"staging\"\naddress = \"a\"\n"), RT);
    case("unk env", FT, ENV, "[[host]]\nname = \"web-01\"\nenvironment = \"stagin\"\n", RT);
    case("unk rt", FT, "[runtimes]\ngreter = \"1.0.0\"\njava = \"1\"\n", HOST, RT);
    case("unk ver", FT, "[runtimes]\ngreeter = \"9.0.0\"\n", HOST, RT);
    case("promo", &format!("{FT}promotion = [\"staging\", \"prod\", \"staging\", \"stagin\"]\n"), ENV, HOST, RT);
    case("waves dec", FT, &format!("{ENV}\n[rollout]\nwaves = [5, 2, \"50%\", \"25%\", 0]\n"), HOST, RT);
    case("waves 150", FT, &format!("{ENV}\n[rollout]\nwaves = [1, \"150%\"]\n"), HOST, RT);
    case("dur", FT, &format!("{ENV}\n[rollout]\nbake = \"5x\"\n"), HOST, RT);
    case("time", FT, &format!("{ENV}\n[[window]]\ndays = [\"sat\", \"sunday\"]\nstart = \"25:00\"\nduration = \"1h\"\ntimezone = \"Mars/Olympus\"\n"), HOST, RT);
    case("win0", FT, &format!("{ENV}\n[[window]]\nstart = \"02:00\"\nduration = \"0s\"\n[[window]]\nstart = \"02:00\"\nduration = \"8d\"\n[[window]]\nstart = \"02:00\"\nend = \"02:00\"\n"), HOST, RT);
    case("win both", FT, &format!("{ENV}\n[[window]]\nstart = \"02:00\"\nduration = \"1h\"\nend = \"03:00\"\n[[window]]\nstart = \"02:00\"\n"), HOST, RT);
    case("freeze", FT, &format!("{ENV}\n[[freeze]]\nfrom = \"2026-12-20T00:00:00Z\"\nuntil = \"2026-12-20T00:00:00Z\"\n[[freeze]]\nfrom = \"2026-12-20\"\nuntil = \"2026-13-01T00:00:00Z\"\n"), HOST, RT);
    case("paths", FT, &format!("{ENV}\n[[file]]\npath = \"etc/x\"\ncontent = \"\"\n[[file]]\npath = \"/etc/./x\"\ncontent = \"\"\n[[file]]\npath = \"/etc/../x\"\ncontent = \"\"\n[[file]]\npath = \"/etc//x\"\ncontent = \"\"\n[[file]]\npath = \"/etc/x\\ny\"\ncontent = \"\"\n"), HOST, RT);
    case("under", FT, &format!("{ENV}\n[[file]]\npath = \"/opt/flotilla/runtimes/x\"\ncontent = \"\"\n[[file]]\npath = \"/var/lib/flotilla/state.json\"\ncontent = \"\"\n"), HOST, RT);
    case("content src", FT, &format!("{ENV}\n[[file]]\npath = \"/etc/a\"\ncontent = \"\"\nsource = \"files/motd\"\n[[file]]\npath = \"/etc/b\"\n"), HOST, RT);
    case("missing", FT, &format!("{ENV}\n[[file]]\npath = \"/etc/a\"\nsource = \"files/nope\"\n[[file]]\npath = \"/etc/b\"\nsource = \"files/link\"\n"), HOST, &RT.replace("artifacts/g.tgz", "artifacts/nope.tgz"));
    case("sha", FT, ENV, HOST, &RT.replace("\"1111", "\"zz11"));
    case("tmpl", FT, &format!("{ENV}\n[[file]]\npath = \"/etc/a\"\ntemplate = true\ncontent = \"{{{{ host.secret }}}}\"\n"), HOST, RT);
    case("tmpl label", FT, &format!("{ENV}\n[[file]]\npath = \"/etc/a\"\ntemplate = true\ncontent = \"{{{{ host.labels.zone }}}}\"\n"), HOST, RT);
    case("tmpl literal", FT, &format!("{ENV}\n[[file]]\npath = \"/etc/a\"\ncontent = \"{{{{ host.secret }}}}\"\n"), HOST, RT);
    case("trust", &format!("{FT}[trust]\nkeys = [\"RWnope\"]\n"), ENV, HOST, RT);
    case("root", FT, ENV, &format!("{HOST}root = \"roots/a\"\n"), RT);
    case("root local", FT, ENV, &format!("{HOST}root = \"roots/a\"\ntransport = \"local\"\n"), RT);
    case("ident", &format!("{FT}[defaults]\nidentity_file = \"/srv/fleet/keys/id\"\nknown_hosts = \"keys/kh\"\n"), ENV, HOST, RT);
    case("names", FT, ENV, "[[host]]\nname = \"..\"\nenvironment = \"staging\"\n[[host]]\nname = \"a/b\"\nenvironment = \"staging\"\n[[host]]\nname = \".x\"\nenvironment = \"staging\"\n", &RT.replace("\"1.0.0\"", "\"current\""));
    case("types", &format!("{FT}[defaults]\nport = \"22\"\n"), ENV, HOST, RT);
    case("types2", FT, ENV, &format!("{HOST}canary = \"yes\"\n"), RT);
}
