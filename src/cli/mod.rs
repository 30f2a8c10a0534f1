//! The command line: argument parsing, wiring library calls together, and the views that
//! print results. Exit codes are chosen here and only here (DESIGN §11).

mod apply;
mod args;
mod commands;
mod init;
mod output;
mod pause;
mod preview;
mod release;
mod signals;
mod store;
mod tooling;
mod views;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use output::errln;

pub use args::{Cli, VERSION};

/// What a command concluded; `main` maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0
    Success,
    /// 1: invalid input, an error, a host that could not be observed.
    Failure,
    /// 2: `plan --detailed-exitcode` found changes.
    Changes,
    /// 3: `apply`: nothing failed, but changes wait (window, freeze).
    Waiting,
}

impl From<crate::apply::Outcome> for Outcome {
    fn from(o: crate::apply::Outcome) -> Outcome {
        match o {
            crate::apply::Outcome::Success => Outcome::Success,
            crate::apply::Outcome::Failure => Outcome::Failure,
            crate::apply::Outcome::Waiting => Outcome::Waiting,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        match o {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failure => ExitCode::from(1),
            Outcome::Changes => ExitCode::from(2),
            Outcome::Waiting => ExitCode::from(3),
        }
    }
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // A closed pipe (`flotilla --help | head -1`) is ignored here: nothing is left to say.
            let _ = e.print();
            // --help and --version are successes; bad usage is exit 1 like every other error
            // (clap's own 2 means "changes" here, DESIGN §11).
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let color = use_color(&cli);
    match runtime.block_on(commands::run(&cli, color)) {
        Ok(outcome) => outcome.into(),
        Err(e) if output::is_closed_pipe(&e) => ExitCode::from(output::CLOSED_PIPE_EXIT),
        Err(e) => {
            errln!("error: {}", crate::diagnostic::error_line(e.chain()));
            ExitCode::from(1)
        }
    }
}

fn use_color(cli: &Cli) -> bool {
    !cli.global.no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("flotilla={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.global.log_format {
        args::LogFormat::Json => builder.json().try_init(),
        args::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .try_init(),
    };
}
