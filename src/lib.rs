//! Flotilla: a GitOps reconciler for fleets of Linux hosts.
//!
//! A functional core — [`manifest`], [`resolve`], [`plan`], [`schedule`] — is pure and takes
//! time as an argument; I/O lives at the edges — [`repo`], [`transport`], [`observe`]. The
//! `flotilla` binary is a thin shell over [`cli`]. DESIGN.md §12 describes the layout.

pub mod apply;
pub mod artifact;
pub mod cancel;
pub mod cli;
pub mod clock;
pub mod diagnostic;
pub mod duration;
pub mod hoststate;
pub mod init;
pub mod load;
pub mod manifest;
pub mod names;
pub mod observe;
pub mod plan;
pub mod preview;
pub mod release;
pub mod repo;
pub mod resolve;
pub mod rollout;
pub mod schedule;
pub mod schema;
pub mod show;
pub mod status;
pub mod store;
pub mod target;
pub mod text;
pub mod transaction;
pub mod transport;
pub mod watch;
