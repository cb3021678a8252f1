//! Operations, one module each. Each takes resolved [`crate::config::Settings`]
//! and plain option structs, and fills a [`crate::report::Envelope`].

pub mod backup;
pub mod checkpoint;
pub mod external_prune;
pub mod health;
pub mod list;
pub mod names;
pub mod package_plan;
pub mod phases;
pub mod place;
pub mod prune;
pub mod refetch;
pub mod repair;
pub mod report;
pub mod restore;
pub mod schedule;
pub mod select;
pub mod sizes;
pub mod sync;
pub mod undo;
pub mod verify;
