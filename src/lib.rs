//! `dotfiles_backup`: crash-safe, content-addressed checkpoints and rollback
//! for machine bootstrap.
//!
//! The binaries in `src/bin/` only parse arguments and print; everything they
//! decide lives here. Start at [`ops`] for the operations, [`repo`] for the
//! on-disk format, [`report`] and [`exit`] for the output contract.

pub mod atomic;
pub mod cli;
pub mod config;
pub mod diff;
pub mod effective;
pub mod error;
pub mod exit;
pub mod external;
pub mod hash;
pub mod hooks;
pub mod host;
pub mod human;
pub mod ops;
pub mod packages;
pub mod paths;
pub mod progress;
pub mod repo;
pub mod report;
pub mod retry;
pub mod runlog;
pub mod scan;
pub mod secrets;
pub mod space;
pub mod sys;
pub mod time;
pub mod units;
