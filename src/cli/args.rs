//! Command-line arguments (DESIGN §11). Every command's `--help` ends with its exit codes and
//! two examples; options are grouped under headings (command options, targeting, connection,
//! global) and each command takes only the flags it uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `0.1.0 (commit 1a2b3c4)`; the commit is "unknown" when built outside Git (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLOTILLA_COMMIT"),
    ")"
);

const MAIN_HELP: &str = "\
Exit codes:
  0  success
  1  invalid manifests, an error, or a usage error
  2  plan --detailed-exitcode: there are changes
  3  apply: nothing failed, but changes wait (window, freeze, promotion, bake, pause)
  141  standard output was closed early (for example by `| head`); nothing is printed

Examples:
  flotilla init my-fleet && cd my-fleet && flotilla plan
  flotilla apply --env staging --auto-approve";

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version = VERSION,
    about = "GitOps for fleets of Linux hosts: exact plans, safe rollouts.",
    after_help = MAIN_HELP,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after the command name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The store directory (default: $XDG_STATE_HOME/flotilla/<fleet>).
    #[arg(long, global = true, env = "FLOTILLA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A store in PostgreSQL, shared by operators, CI and `watch` replicas:
    /// postgres://USER@HOST:PORT/DB (add ?sslmode=require for TLS).
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_STATE",
        value_name = "URL",
        conflicts_with = "state_dir"
    )]
    pub state: Option<String>,
    /// No colour, whatever the terminal (NO_COLOR is honoured too).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// How log lines and apply progress are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// Only these minisign public keys are trusted (one per line), whatever the manifests say;
    /// signatures are then required. Every command that checks artifacts honours it.
    #[arg(long, global = true, env = "FLOTILLA_TRUSTED_KEYS", value_name = "FILE")]
    pub trusted_keys: Option<PathBuf>,
    /// SSH sessions at once across the fleet.
    #[arg(long, global = true, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Exit codes and examples, one block per command (DESIGN §11).
mod help {
    pub const VALIDATE: &str = "\
Exit codes:
  0  the manifests are valid (and every artifact in the repository checks out)
  1  invalid manifests, a bad artifact, or an error

Examples:
  flotilla validate
  flotilla validate manifests --rev origin/main";
    pub const PLAN: &str = "\
Exit codes:
  0  done (with --detailed-exitcode: no changes)
  1  invalid manifests, an error, or a host could not be observed (unless --skip-unreachable)
  2  there are changes (only with --detailed-exitcode)

Examples:
  flotilla plan --env staging
  flotilla plan --format json --out plan.json --detailed-exitcode";
    pub const APPLY: &str = "\
Exit codes:
  0  every targeted change was applied
  1  invalid manifests, an error, a host failed, or anything was rolled back
  3  nothing failed, but changes wait (window, freeze, promotion, bake, pause)

Examples:
  flotilla apply --env staging
  flotilla apply --plan plan.json --auto-approve";
    pub const PREVIEW: &str = "\
Both revisions are read from Git objects, never checked out. With --against manifests (the
default) no host is contacted: every host is assumed at base's desired state. With --against
fleet hosts are observed with base's connection settings; hosts new in head are not contacted.

Exit codes:
  0  done (the preview was printed)
  1  head is invalid (its errors are printed, located, in the chosen format), or an error

Examples:
  flotilla preview --base origin/main --head HEAD --format markdown > comment.md
  flotilla preview --base main --head pr-42 --against fleet --at 2026-12-05T09:00:00Z";
    pub const SHOW: &str = "\
Exit codes:
  0  done
  1  invalid manifests, an error, or an unknown host

Examples:
  flotilla show web-01
  flotilla show web-01 --format json --rev HEAD~1";
    pub const HISTORY: &str = "\
Exit codes:
  0  done
  1  no store yet, or an error

Examples:
  flotilla history --limit 20
  flotilla history --host web-01 --json";
    pub const WATCH: &str = "\
Without --once, watch runs until SIGTERM/SIGINT, lets hosts in flight finish and exits 0.

Exit codes:
  0  (--once) every change applied, or none to make
  1  (--once) invalid revision, a host failed or could not be observed, or an error
  3  (--once) changes wait (window, freeze, promotion, pause, or a person's apply)

Examples:
  flotilla watch --listen :9090
  flotilla watch --state-dir /var/lib/flotilla --remote https://git.example.com/fleet.git --branch main";
    pub const PAUSE: &str = "\
In-flight hosts finish; no host change starts in the scope until `flotilla resume`. Works
while an apply or watch runs (they check before every host start).

Exit codes:
  0  paused
  1  unknown environment, or an error

Examples:
  flotilla pause 'INC-4711: database failover'
  flotilla pause --env production 'change freeze for the launch'";
    pub const RESUME: &str = "\
Exit codes:
  0  resumed (or nothing was paused in that scope)
  1  unknown environment, or an error

Examples:
  flotilla resume
  flotilla resume --env production";
    pub const STATUS: &str = "\
Exit codes:
  0  done
  1  invalid manifests, an error, or a host could not be observed

Examples:
  flotilla status
  flotilla status --env prod --json";
    pub const SCHEMA: &str = "\
Exit codes:
  0  written (with --check: up to date)
  1  out of date (with --check), or an error

Examples:
  flotilla schema
  flotilla schema --check --out-dir schema";
    pub const INIT: &str = "\
Exit codes:
  0  the fleet was written
  1  DIR is not empty, the signing key exists already, or an error

Examples:
  flotilla init my-fleet
  flotilla init my-fleet --name acme --secret-key ~/keys/acme.key";
    pub const RELEASE: &str = "\
Exit codes:
  0  the version was added
  1  the version exists already, FILE is not a regular file or not a valid tarball, or an error

Examples:
  flotilla release app 1.2.0 dist/app-1.2.0.tar.gz --sign ~/.config/flotilla/keys/acme.key
  flotilla release app 1.2.0 dist/app-1.2.0.tar.gz --url https://dl.example.com/app-1.2.0.tar.gz --sign k.key";
    pub const COMPLETIONS: &str = "\
Exit codes:
  0  the script was printed
  1  an error

Examples:
  flotilla completions bash > ~/.local/share/bash-completion/completions/flotilla
  flotilla completions zsh > \"${fpath[1]}/_flotilla\"";
    pub const MAN: &str = "\
Exit codes:
  0  the page was printed (or written)
  1  an error

Examples:
  flotilla man | man -l -
  flotilla man --out-dir /usr/local/share/man/man1";
    pub const STORE: &str = "\
Exit codes:
  0  done
  1  the source or target cannot be used (the target already holds state), or an error

Examples:
  flotilla store copy --from ~/.local/state/flotilla/acme --to postgres://flotilla@db.example/acme
  flotilla store copy --from /var/lib/flotilla --to 'postgres://flotilla@db.example/acme?sslmode=require'";
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check every manifest and artifact; exit 1 with every problem found.
    #[command(after_help = help::VALIDATE)]
    Validate(Source),
    /// Observe hosts and print what applying would change.
    #[command(after_help = help::PLAN)]
    Plan(PlanArgs),
    /// Plan, confirm, and apply the changes host by host, wave by wave.
    #[command(after_help = help::APPLY)]
    Apply(ApplyArgs),
    /// What merging a pull request will do: head's plan against base, with notices for
    /// reviewers and a rollout forecast (markdown for a pull-request comment).
    #[command(after_help = help::PREVIEW)]
    Preview(PreviewArgs),
    /// One host's resolved desired state and where each value comes from.
    #[command(after_help = help::SHOW)]
    Show(ShowArgs),
    /// The audit log of applies.
    #[command(after_help = help::HISTORY)]
    History(HistoryArgs),
    /// Where every environment and host stands: converged, pending, waiting, failed, halted,
    /// drifted, unreachable.
    #[command(after_help = help::STATUS)]
    Status(StatusArgs),
    /// Follow a branch: plan and apply every new revision to auto_apply environments, correct
    /// drift, serve health and metrics.
    #[command(after_help = help::WATCH)]
    Watch(WatchArgs),
    /// Stop all host changes (apply and watch) in the fleet or one environment until resumed.
    #[command(after_help = help::PAUSE)]
    Pause(PauseArgs),
    /// Lift a pause made with `flotilla pause`.
    #[command(after_help = help::RESUME)]
    Resume(ResumeArgs),
    /// Write the JSON Schemas for manifests and plans.
    #[command(after_help = help::SCHEMA)]
    Schema(SchemaArgs),
    /// Write a new fleet that validates and plans as it is: manifests, a signed example
    /// runtime, schemas and a README of next steps.
    #[command(after_help = help::INIT)]
    Init(InitArgs),
    /// Add a version to runtimes/RUNTIME.toml: copy (or link) the tarball, record its sha256
    /// and sign it.
    #[command(after_help = help::RELEASE)]
    Release(ReleaseArgs),
    /// Print a shell completion script.
    #[command(after_help = help::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Print the man page (or write one page per command).
    #[command(after_help = help::MAN)]
    Man(ManArgs),
    /// Manage the store itself: copy a directory store into PostgreSQL.
    #[command(after_help = help::STORE, subcommand)]
    Store(StoreCommand),
}

/// `flotilla store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a directory store into a PostgreSQL database, keeping its id (hosts are not
    /// refused), epoch, audit log, rollouts, promotion records, pauses, approvals, observations
    /// and digest key. The database must hold no store yet.
    #[command(after_help = help::STORE)]
    Copy(StoreCopyArgs),
}

#[derive(Debug, Args)]
pub struct StoreCopyArgs {
    /// The directory store to copy (left as it is).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The PostgreSQL store to create: postgres://USER@HOST:PORT/DB.
    #[arg(long, value_name = "URL")]
    pub to: String,
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
#[command(next_help_heading = "Targeting (repeats widen, different flags narrow)")]
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

/// Settings for commands that connect to hosts; they override the manifests.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Connection options")]
pub struct Connection {
    /// SSH private key for every host (overrides `identity_file` in the manifests).
    #[arg(long, value_name = "FILE")]
    pub identity_file: Option<PathBuf>,
    /// known_hosts file for every host (overrides `known_hosts` in the manifests).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: grouped, folded, coloured on a terminal.
    Text,
    /// One JSON document (schema/plan.schema.json for plans).
    Json,
    /// A pull-request comment.
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: Source,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
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
    #[command(flatten)]
    pub targeting: Targeting,
    #[command(flatten)]
    pub connection: Connection,
}

/// What a preview plans against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgainstArg {
    /// Every host at base's desired state; no network.
    Manifests,
    /// Hosts observed live with base's connection settings.
    Fleet,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The revision the pull request merges into (a branch, tag or commit).
    #[arg(long, value_name = "REV")]
    pub base: String,
    /// The pull request's revision.
    #[arg(long, value_name = "REV")]
    pub head: String,
    /// The fleet root: the directory holding flotilla.toml (in both revisions).
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Markdown, value_name = "FORMAT")]
    pub format: Format,
    /// Plan against base's manifests (no network) or the live fleet.
    #[arg(long, value_enum, default_value_t = AgainstArg::Manifests, value_name = "WHAT")]
    pub against: AgainstArg,
    /// Evaluate windows and freezes, and start the forecast, at this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The host's name, as in its [[host]] table.
    #[arg(value_name = "HOST")]
    pub host: String,
    #[command(flatten)]
    pub source: Source,
    /// Output format (markdown prints text).
    #[arg(long, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
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
    /// Apply a plan saved with `plan --out` (only its hosts, only if they are unchanged).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rev", "envs", "hosts", "labels", "exclude"])]
    pub plan: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply a working tree with uncommitted changes (audited as dirty).
    #[arg(long)]
    pub allow_dirty: bool,
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
    /// Output format (only text for now).
    #[arg(long, value_enum, default_value_t = Format::Text, hide = true)]
    pub format: Format,
    #[command(flatten)]
    pub targeting: Targeting,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The fleet root (its name picks the default store).
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Only events of this host.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only events of this environment.
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
pub struct WatchArgs {
    /// The fleet root, in a local repository whose branch is followed (without --remote).
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Follow this remote repository (file://, https:// or ssh://) through a mirror in the
    /// store; needs --state-dir.
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// The branch to follow (default: the local repository's current branch; `main` for a
    /// remote).
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// How often the branch is polled (a local repository also wakes watch on every commit).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = duration)]
    pub interval: std::time::Duration,
    /// How often every host is observed and drift corrected.
    #[arg(long, default_value = "15m", value_name = "DURATION", value_parser = duration)]
    pub drift_interval: std::time::Duration,
    /// Serve /healthz, /readyz, /metrics, /status and /plan (`:9090` binds 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// One cycle, then exit with apply's exit code.
    #[arg(long)]
    pub once: bool,
    /// The environment variable holding an HTTPS token for --remote (sent as a bearer token).
    #[arg(long, default_value = "FLOTILLA_GIT_TOKEN", value_name = "VAR")]
    pub remote_token_env: String,
    /// SSH key (a deploy key) for an ssh:// --remote.
    #[arg(long, value_name = "FILE")]
    pub remote_identity: Option<PathBuf>,
    /// known_hosts for an ssh:// --remote (host keys are always checked).
    #[arg(long, value_name = "FILE")]
    pub remote_known_hosts: Option<PathBuf>,
    #[command(flatten)]
    pub connection: Connection,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Why: shown by plan, apply, status and watch, and written to the audit log.
    #[arg(value_name = "REASON")]
    pub reason: String,
    /// The fleet root (its name picks the default store).
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Pause only this environment (default: the whole fleet).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The fleet root (its name picks the default store).
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Resume only this environment (default: lift the fleet-wide pause).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: Source,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub targeting: Targeting,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the fleet; it must not exist or be empty.
    #[arg(default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    /// The fleet's name (default: DIR's name, made a valid name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where to write the new minisign secret key; never inside DIR (default:
    /// $XDG_CONFIG_HOME/flotilla/keys/NAME.key, else ~/.config/flotilla/keys/NAME.key).
    #[arg(long, value_name = "FILE")]
    pub secret_key: Option<PathBuf>,
    /// Do not create a Git repository and commit (the default when DIR is not inside one).
    #[arg(long)]
    pub no_git: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The runtime: runtimes/RUNTIME.toml (created if missing).
    #[arg(value_name = "RUNTIME")]
    pub runtime: String,
    /// The new version's name; it must not exist yet.
    #[arg(value_name = "VERSION")]
    pub version: String,
    /// The tarball (.tar.gz or .tgz) to release.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The fleet root: the directory holding flotilla.toml.
    #[arg(default_value = ".", value_name = "FLEET_DIR")]
    pub fleet_dir: PathBuf,
    /// Sign FILE with this minisign secret key (a password-protected key reads
    /// FLOTILLA_SIGN_PASSWORD, else asks on the terminal). Without it, FILE.minisig is used
    /// if it exists.
    #[arg(long, value_name = "SECRET_KEY")]
    pub sign: Option<PathBuf>,
    /// Record this https:// or file:// URL as the artifact instead of copying FILE into
    /// artifacts/ (the signature is still kept in the repository).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write flotilla.1 and one flotilla-COMMAND.1 per command into DIR instead of printing
    /// flotilla.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}
