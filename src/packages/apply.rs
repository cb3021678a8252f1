//! Running a [`PackagePlan`] (`backup-rollback --packages apply`): one
//! manager at a time, in the plan's order, stopping at the first command
//! that fails or times out, and reporting every command with how it ended.
//!
//! Before a removal command runs, its package names are checked again:
//!
//! * a name present in the target checkpoint's list is dropped (the plan
//!   never puts one there; this is the second guard);
//! * a name that something kept depends on is dropped, where the manager can
//!   tell: brew asks `brew uses --installed NAME` (formulae; casks have no
//!   dependents), pip reads `Required-by:` of `pip show NAME`, apt simulates
//!   `apt-get -s remove -y …` and drops the whole removal when it would take
//!   any package the plan does not name. npm global packages are top-level
//!   (nothing depends on them) and VS Code refuses to uninstall an extension
//!   another one depends on by itself. A check that cannot run drops the
//!   name too: unknown is never read as "not needed".
//!
//! apt (and any command of it) runs only as root; otherwise its commands are
//! reported as skipped, to be run by hand. Every command runs like a capture
//! ([`super::exec`]): its own process group, stdin closed, a timeout
//! (`packages.apply_timeout_secs`) and caches and logs in a scratch directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::plan::{ManagerPlan, PackagePlan};
use super::{exec, parse, Failure};
use crate::repo::snapshot::PackageList;

/// One command that ran.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ran {
    /// Manager.
    pub manager: String,
    /// The command as run (argument vector).
    pub command: Vec<String>,
    /// `ok`, `failed` or `timeout`.
    pub status: &'static str,
    /// How it failed (exit status and the first line of its stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Something of the plan that was not done, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// Manager.
    pub manager: String,
    /// The package (absent: the manager's whole plan or command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Why.
    pub reason: String,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ApplyReport {
    /// Commands run, in order.
    pub ran: Vec<Ran>,
    /// Packages and commands left out.
    pub skipped: Vec<Skipped>,
    /// The manager whose command failed (nothing after it ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
}

/// How commands are run.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Time limit of each command.
    pub timeout: Duration,
    /// Whether root-only managers (apt) may run.
    pub root: bool,
}

/// Run the plan. `target` is the checkpoint's lists (the second guard).
pub fn apply(plan: &PackagePlan, target: &[PackageList], opts: &ApplyOptions) -> ApplyReport {
    let mut report = ApplyReport::default();
    let scratch = tempfile::Builder::new()
        .prefix("dotfiles-backup-packages-")
        .tempdir()
        .ok();
    let scratch = scratch.as_ref().map(|d| d.path());
    for m in &plan.managers {
        if m.status != "planned" || m.commands.is_empty() {
            continue;
        }
        if m.name == "apt" && !opts.root {
            report.skipped.push(Skipped {
                manager: m.name.clone(),
                package: None,
                reason: "apt-get needs root; run the commands shown as root".into(),
            });
            continue;
        }
        if let Err(why) = write_files(m) {
            report.skipped.push(Skipped {
                manager: m.name.clone(),
                package: None,
                reason: why,
            });
            report.stopped_at = Some(m.name.clone());
            return report;
        }
        let kept = target_names(&m.name, target);
        for cmd in &m.commands {
            let Some(cmd) = checked(m, cmd, &kept, opts, scratch, &mut report.skipped) else {
                continue;
            };
            let (program, args) = cmd.split_first().expect("a command has a program");
            let result = exec(Path::new(program), args, opts.timeout, 1 << 20, scratch);
            let (status, message) = match result {
                Ok(_) => ("ok", None),
                Err(Failure::Timeout) => (
                    "timeout",
                    Some(format!(
                        "did not finish within {} s and was stopped; raise packages.apply_timeout_secs if it is just slow",
                        opts.timeout.as_secs()
                    )),
                ),
                Err(Failure::Failed(why)) => ("failed", Some(why)),
            };
            report.ran.push(Ran {
                manager: m.name.clone(),
                command: cmd.clone(),
                status,
                message,
            });
            if status != "ok" {
                report.stopped_at = Some(m.name.clone());
                return report;
            }
        }
    }
    report
}

/// Write the files the manager's commands read (the target's Brewfile).
fn write_files(m: &ManagerPlan) -> Result<(), String> {
    for f in &m.files {
        let path = Path::new(&f.path);
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "{} could not be written ({e}); nothing of `{}` ran",
                f.path, m.name
            )
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        crate::atomic::write_file_atomic(path, f.content.as_bytes(), 0o600)
            .map_err(|e| fail(&e.message))?;
    }
    Ok(())
}

/// Names the target checkpoint lists for `manager` (brew: formulae, casks
/// and taps by bare name, from both captures).
fn target_names(manager: &str, target: &[PackageList]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in target.iter().filter(|l| l.is_known()) {
        let ours = l.name == manager || (manager == "brew" && l.name == "brewfile");
        if !ours {
            continue;
        }
        for k in parse(l).into_keys() {
            match (l.name.as_str(), k.split_once(' ')) {
                ("brewfile", Some((_, bare))) => out.insert(bare.to_string()),
                _ => out.insert(super::plan::canonical_name(manager, &k)),
            };
        }
    }
    out
}

/// Where the package names of a removal command start, or `None` for a
/// command that installs.
fn removal_start(cmd: &[String]) -> Option<usize> {
    let verb = cmd.get(1)?;
    if !["uninstall", "remove", "untap", "--uninstall-extension"].contains(&verb.as_str()) {
        return None;
    }
    Some(2 + cmd[2..].iter().take_while(|a| a.starts_with('-')).count())
}

/// The command with every name dropped that must not be removed, or `None`
/// when none is left.
fn checked(
    m: &ManagerPlan,
    cmd: &[String],
    kept: &BTreeSet<String>,
    opts: &ApplyOptions,
    scratch: Option<&Path>,
    skipped: &mut Vec<Skipped>,
) -> Option<Vec<String>> {
    let Some(start) = removal_start(cmd) else {
        return Some(cmd.to_vec());
    };
    let removing: BTreeSet<&str> = cmd[start..].iter().map(String::as_str).collect();
    let mut skip = |package: &str, reason: String| {
        skipped.push(Skipped {
            manager: m.name.clone(),
            package: Some(package.to_string()),
            reason,
        })
    };
    let ask = |args: &[&str]| -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        exec(Path::new(&cmd[0]), &args, opts.timeout, 1 << 20, scratch)
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .map_err(|e| match e {
                Failure::Timeout => "it timed out".to_string(),
                Failure::Failed(why) => why,
            })
    };
    let mut names = Vec::new();
    for name in &cmd[start..] {
        if kept.contains(&super::plan::canonical_name(&m.name, name)) {
            skip(name, "present in the checkpoint; never removed".into());
            continue;
        }
        let needed_by = match (
            m.name.as_str(),
            cmd[1].as_str(),
            cmd.get(2).map(String::as_str),
        ) {
            ("brew", "uninstall", Some(n)) if n != "--cask" => ask(&["uses", "--installed", name])
                .map(|out| others(&out, &removing, |t| t.split_whitespace())),
            ("pip", _, _) => ask(&["show", name]).map(|out| {
                let line = out
                    .lines()
                    .find_map(|l| l.strip_prefix("Required-by:"))
                    .unwrap_or("");
                others(line, &removing, |t| t.split(','))
            }),
            _ => Ok(Vec::new()),
        };
        match needed_by {
            Ok(users) if users.is_empty() => names.push(name.clone()),
            Ok(users) => skip(
                name,
                format!("kept packages depend on it: {}", users.join(", ")),
            ),
            Err(why) => skip(
                name,
                format!(
                    "could not ask whether something kept depends on it ({why}); left installed"
                ),
            ),
        }
    }
    if m.name == "apt" && !names.is_empty() {
        let mut sim = vec!["-s", "remove", "-y"];
        sim.extend(names.iter().map(String::as_str));
        let sim: Vec<String> = sim.iter().map(|s| s.to_string()).collect();
        let extra = exec(Path::new(&cmd[0]), &sim, opts.timeout, 1 << 20, scratch)
            .map(|o| {
                let out = String::from_utf8_lossy(&o).into_owned();
                let named: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                out.lines()
                    .filter_map(|l| l.strip_prefix("Remv "))
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|p| !named.contains(p))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .map_err(|e| match e {
                Failure::Timeout => "it timed out".to_string(),
                Failure::Failed(why) => why,
            });
        let why = match extra {
            Ok(x) if x.is_empty() => None,
            Ok(x) => Some(format!(
                "apt-get would also remove {}, which the plan keeps",
                x.join(", ")
            )),
            Err(why) => Some(format!("the simulation `apt-get -s remove` failed ({why})")),
        };
        if let Some(why) = why {
            for n in &names {
                skip(n, why.clone());
            }
            return None;
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut out = cmd[..start].to_vec();
    out.extend(names);
    Some(out)
}

/// Tokens of `text` (split by `split`, trimmed) that are not being removed too.
fn others<'t, I: Iterator<Item = &'t str>>(
    text: &'t str,
    removing: &BTreeSet<&str>,
    split: impl Fn(&'t str) -> I,
) -> Vec<String> {
    split(text)
        .map(str::trim)
        .filter(|t| !t.is_empty() && !removing.contains(t))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_names_start_after_the_verb_and_its_flags() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            removal_start(&v(&["brew", "uninstall", "--cask", "x"])),
            Some(3)
        );
        assert_eq!(
            removal_start(&v(&["apt-get", "remove", "-y", "x"])),
            Some(3)
        );
        assert_eq!(
            removal_start(&v(&["code", "--uninstall-extension", "x"])),
            Some(2)
        );
        assert_eq!(removal_start(&v(&["pip", "install", "x==1"])), None);
        assert_eq!(
            removal_start(&v(&["brew", "bundle", "--file=f", "install"])),
            None
        );
    }

    #[test]
    fn others_leaves_out_what_is_removed_too() {
        let removing: BTreeSet<&str> = ["a", "b"].into_iter().collect();
        assert_eq!(others("a, c ,", &removing, |t| t.split(',')), vec!["c"]);
        assert!(others("", &removing, |t| t.split(',')).is_empty());
    }
}
