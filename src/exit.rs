//! Process exit codes: the one place that maps an outcome to an integer.
//!
//! Modelled on fd's `exit_codes.rs`: nothing else in the project calls
//! `std::process::exit` with a literal. The numbers are a public contract
//! (README, `docs/cli.md`) that Ansible roles and scripts branch on, so they
//! never change meaning; new outcomes get new numbers.

use serde::Serialize;

/// Every way a binary can end, in order of severity where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCode {
    /// Done, or skipped on purpose (disabled, nothing to do).
    Success,
    /// The operation failed; nothing was committed.
    Failed,
    /// Bad arguments, unknown phase, unsafe name, bad configuration.
    Usage,
    /// Some paths failed and are listed; everything else was committed.
    Partial,
    /// Another writer held the repository lock for longer than `--wait`.
    LockBusy,
    /// Refused for safety: low disk, conflicts, would overwrite without a safety copy.
    Refused,
    /// The repository is damaged, or of a newer format than this build knows.
    Corrupt,
    /// The file system filled up during the write; nothing was committed.
    NoSpace,
    /// A writer met a repository it cannot write (a read-only mount, or no
    /// write permission); nothing was changed.
    ReadOnly,
    /// The operation finished, but its result could not be written to
    /// standard output (a full disk or an I/O error on the file it was
    /// redirected to). What the run did is in the run log and `backup-list`.
    OutputLost,
    /// A bug: a panic was caught. Nothing half-written is visible.
    Internal,
}

impl ExitCode {
    /// The integer handed to the operating system.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failed => 1,
            ExitCode::Usage => 2,
            ExitCode::Partial => 3,
            ExitCode::LockBusy => 4,
            ExitCode::Refused => 5,
            ExitCode::Corrupt => 6,
            ExitCode::NoSpace => 7,
            ExitCode::ReadOnly => 8,
            ExitCode::OutputLost => 9,
            ExitCode::Internal => 70,
        }
    }

    /// All variants, for documentation and tests.
    pub const ALL: [ExitCode; 11] = [
        ExitCode::Success,
        ExitCode::Failed,
        ExitCode::Usage,
        ExitCode::Partial,
        ExitCode::LockBusy,
        ExitCode::Refused,
        ExitCode::Corrupt,
        ExitCode::NoSpace,
        ExitCode::ReadOnly,
        ExitCode::OutputLost,
        ExitCode::Internal,
    ];
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        // Codes are < 256 by construction (tested below).
        std::process::ExitCode::from(code.code() as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_and_fit_in_a_byte() {
        let codes: HashSet<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), ExitCode::ALL.len());
        assert!(codes.iter().all(|c| (0..=255).contains(c)));
    }

    #[test]
    fn documented_values_are_stable() {
        // These numbers are in README.md and docs/cli.md; changing one breaks users.
        assert_eq!(ExitCode::Success.code(), 0);
        assert_eq!(ExitCode::Failed.code(), 1);
        assert_eq!(ExitCode::Usage.code(), 2);
        assert_eq!(ExitCode::Partial.code(), 3);
        assert_eq!(ExitCode::LockBusy.code(), 4);
        assert_eq!(ExitCode::Refused.code(), 5);
        assert_eq!(ExitCode::Corrupt.code(), 6);
        assert_eq!(ExitCode::NoSpace.code(), 7);
        assert_eq!(ExitCode::ReadOnly.code(), 8);
        assert_eq!(ExitCode::Internal.code(), 70);
    }
}
