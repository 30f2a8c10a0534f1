//! Scheduling, pure: which hosts go in which wave ([`waves`]) and when an environment may
//! change ([`window`]: maintenance windows and freezes). Time is always an argument.

pub mod waves;
pub mod window;
