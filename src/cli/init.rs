//! `flotilla init [DIR]`: writes a new fleet through [`crate::init`] and says what it wrote
//! and what to do next.

use super::Outcome;
use super::args::InitArgs;
use super::output::outln;
use crate::init::{InitRequest, RUNTIME, VERSION};

pub fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    let done = crate::init::init(&InitRequest {
        dir: &args.dir,
        name: args.name.as_deref(),
        secret_key: args.secret_key.as_deref(),
        git: !args.no_git,
    })?;
    let name = &done.name;
    let key_path = &done.key_path;
    let shown = args.dir.display();
    outln!("Wrote a new fleet `{name}` in {shown}:")?;
    outln!("  flotilla.toml              fleet settings; [trust] holds your public key")?;
    outln!("  environments/example.toml  one environment, pinning runtime `{RUNTIME}` {VERSION}")?;
    outln!("  hosts/example.toml         one host on the local transport, rooted at .hosts/example")?;
    outln!("  runtimes/example.toml      the runtime; its signed tarball is in artifacts/")?;
    outln!("  schema/                    JSON Schemas the manifests' #:schema lines point at")?;
    outln!("  README.md                  these next steps")?;
    if done.key_is_new {
        outln!(
            "\nSigning key (secret, outside the fleet; back it up): {}",
            key_path.display()
        )?;
    } else {
        outln!("\nSigning key: reusing {}", key_path.display())?;
    }
    outln!("Public key (in flotilla.toml): {}", done.public_key)?;
    match (&done.committed, &done.enclosing) {
        (Some(c), _) => outln!("Git: new repository, first commit {}", &c[..12.min(c.len())])?,
        (None, Some(workdir)) => outln!(
            "Git: inside the repository at {}; nothing committed: `git add {shown}` and commit it",
            workdir.display()
        )?,
        (None, None) => outln!("Git: skipped (--no-git)")?,
    }
    outln!("\nNext steps:")?;
    outln!("  cd {shown}")?;
    outln!("  flotilla validate                      # check every manifest and artifact")?;
    outln!("  flotilla plan                          # what apply would change")?;
    outln!("  flotilla apply --auto-approve          # install it on the example host")?;
    outln!(
        "  flotilla release {RUNTIME} 1.1.0 FILE.tar.gz --sign {}   # then pin 1.1.0 in environments/example.toml",
        key_path.display()
    )?;
    Ok(Outcome::Success)
}
