//! Command-line arguments (DESIGN §11).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "GitOps for fleets of Linux hosts: exact plans, safe rollouts."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The store directory (default: $XDG_STATE_HOME/flotilla/<fleet>).
    #[arg(long, global = true, env = "FLOTILLA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// No colour, whatever the terminal (NO_COLOR is honoured too).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// SSH private key for every host (overrides `identity_file` in the manifests).
    #[arg(long, global = true, value_name = "FILE")]
    pub identity_file: Option<PathBuf>,
    /// known_hosts file for every host (overrides `known_hosts` in the manifests).
    #[arg(long, global = true, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// SSH sessions at once across the fleet.
    #[arg(long, global = true, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check every manifest; exit 1 with every problem found.
    Validate(Source),
    /// Observe hosts and print what applying would change.
    Plan(PlanArgs),
    /// Plan, confirm, and apply the changes host by host, wave by wave.
    Apply(ApplyArgs),
    /// One host's resolved desired state and where each value comes from.
    Show(ShowArgs),
    /// The audit log of applies.
    History(HistoryArgs),
    /// Where every environment and host stands: converged, pending, waiting, failed, halted,
    /// drifted, unreachable.
    Status(StatusArgs),
    /// Write the JSON Schemas for manifests and plans.
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct Source {
    /// The fleet root: the directory holding flotilla.toml.
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Read the manifests at this Git revision instead of the working tree.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
}

#[derive(Debug, Args)]
pub struct Targeting {
    /// Only hosts of this environment (repeat to widen).
    #[arg(long = "env", value_name = "NAME")]
    pub envs: Vec<String>,
    /// Only hosts whose name matches (a glob; repeat to widen).
    #[arg(long = "host", value_name = "NAME_OR_GLOB")]
    pub hosts: Vec<String>,
    /// Only hosts with this label (repeat to widen).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Leave out hosts whose name matches (applied last).
    #[arg(long = "exclude", value_name = "NAME_OR_GLOB")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub targeting: Targeting,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Every host on its own instead of folding identical ones.
    #[arg(long)]
    pub detail: bool,
    /// Exit 2 when there are changes, 0 when there are none.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Do not fail because a host could not be observed.
    #[arg(long)]
    pub skip_unreachable: bool,
    /// Evaluate windows and freezes at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Also save the JSON plan to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub host: String,
    #[command(flatten)]
    pub source: Source,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Where to write the schemas.
    #[arg(long, default_value = "schema", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Do not write; exit 1 if the files in DIR are out of date.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub targeting: Targeting,
    /// Apply a plan saved with `plan --out` (only its hosts, only if they are unchanged).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rev", "envs", "hosts", "labels", "exclude"])]
    pub plan: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply a working tree with uncommitted changes (audited as dirty).
    #[arg(long)]
    pub allow_dirty: bool,
    /// Only these minisign public keys are trusted (one per line), whatever the manifests say.
    #[arg(long, env = "FLOTILLA_TRUSTED_KEYS", value_name = "FILE")]
    pub trusted_keys: Option<PathBuf>,
    /// Change hosts last written by another store (audited with REASON).
    #[arg(long, value_name = "REASON")]
    pub take_over: Option<String>,
    /// Ignore maintenance windows (audited with REASON).
    #[arg(long, value_name = "REASON")]
    pub override_windows: Option<String>,
    /// Ignore freezes (audited with REASON).
    #[arg(long, value_name = "REASON")]
    pub override_freeze: Option<String>,
    /// Start again a rollout that halted at this revision (DESIGN §6.3); the reason goes to
    /// the audit log.
    #[arg(long, value_name = "REASON")]
    pub retry: Option<String>,
    /// When changes wait (window, freeze, promotion), sleep until they can go and apply then,
    /// instead of exiting 3.
    #[arg(long)]
    pub wait: bool,
    #[arg(long, value_enum, default_value_t = Format::Text, hide = true)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The fleet root (its name picks the default store).
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Only the newest N events.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub targeting: Targeting,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
