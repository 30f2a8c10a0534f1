//! `flotilla completions SHELL` and `flotilla man`: generated from the same clap definition
//! that parses the arguments, so they cannot drift from the real flags.

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Outcome;
use super::args::{Cli, CompletionsArgs, ManArgs};
use super::output::{out, outln};

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "flotilla", &mut script);
    out(&String::from_utf8_lossy(&script))?;
    Ok(Outcome::Success)
}

pub fn man(args: &ManArgs) -> anyhow::Result<Outcome> {
    let cmd = Cli::command();
    match &args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the man page")?;
            out(&String::from_utf8_lossy(&page))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            outln!("wrote man pages into {}", dir.display())?;
        }
    }
    Ok(Outcome::Success)
}
