//! Package-list captures: at a checkpoint, record what the package managers
//! say is installed (`brew list --versions`, the Brewfile from `brew bundle
//! dump --file=-`, `apt-mark showmanual`,
//! `pip list --format=freeze`, `code --list-extensions`, `npm ls -g
//! --depth=0`), so that comparing two phases shows what a bootstrap step
//! installed or removed.
//!
//! * Programs are found on `PATH` with the `which` crate; one that is not
//!   there is skipped without a word (a Linux box has no `brew`).
//! * Every command runs in its own process group with stdin closed and a
//!   timeout; on expiry the whole group is killed (a wrapper script's
//!   children too, so nothing keeps the pipes open) and the capture becomes a
//!   warning naming the command. A non-zero exit is a warning as well; the
//!   checkpoint itself is never failed by a package manager.
//! * All commands run at once, before the repository lock is taken, so a
//!   checkpoint waits for the slowest one only and holds the lock no longer.
//! * Caches and logs go to a scratch directory removed afterwards
//!   ([`SCRATCH_ENV`]): a capture must not write into the home it protects
//!   (`npm ls` writes `~/.npm/_logs` otherwise).
//! * The stdout is stored in the snapshot record's optional `packages`
//!   field with its SHA-256 (equal lists, equal ids; see docs/format.md).
//!
//! [`diff`] compares two snapshots' lists: added, removed and changed
//! (version) packages per manager. It is what `backup-list --diff` shows for
//! packages.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::PackagesSection;
use crate::hash::Hash;
use crate::repo::snapshot::PackageList;
use crate::report::Warning;

/// The default captures: name, alternative programs (first found wins), arguments.
pub const DEFAULT_COMMANDS: &[(&str, &[&str], &[&str])] = &[
    ("brew", &["brew"], &["list", "--versions"]),
    // The whole Brewfile: taps, formulae, casks, `mas` apps, VS Code
    // extensions; what `brew bundle install` needs to rebuild the Mac.
    ("brewfile", &["brew"], &["bundle", "dump", "--file=-"]),
    ("apt", &["apt-mark"], &["showmanual"]),
    ("pip", &["pip", "pip3"], &["list", "--format=freeze"]),
    ("code", &["code"], &["--list-extensions", "--show-versions"]),
    ("npm", &["npm"], &["ls", "-g", "--depth=0"]),
];

/// Environment given to every capture command: cache and log locations of the
/// package managers, each a subdirectory of one scratch directory per capture
/// (removed when the capture ends), so nothing lands in the protected home.
pub const SCRATCH_ENV: &[(&str, &str)] = &[
    ("npm_config_cache", "npm-cache"),
    ("npm_config_logs_dir", "npm-logs"),
    ("PIP_CACHE_DIR", "pip-cache"),
    ("HOMEBREW_CACHE", "brew-cache"),
    ("HOMEBREW_LOGS", "brew-logs"),
    ("XDG_CACHE_HOME", "xdg-cache"),
];

/// How one capture went, as reported in the envelope's `packages` payload.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaptureOutcome {
    /// Capture name.
    pub name: String,
    /// `captured`, `missing` (program not on PATH), `failed` (non-zero exit,
    /// could not start, output too large) or `timeout`.
    pub status: &'static str,
    /// The command line (program path when found).
    pub command: String,
    /// Packages parsed from the output (captured only).
    pub packages: u64,
    /// Output bytes (captured only).
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
}

/// What [`capture`] found.
#[derive(Debug, Default)]
pub struct Captured {
    /// Lists to store in the record, sorted by name.
    pub lists: Vec<PackageList>,
    /// One per configured command, in configured order.
    pub outcomes: Vec<CaptureOutcome>,
    /// `package_capture_failed` warnings.
    pub warnings: Vec<Warning>,
    /// Wall time of the whole capture.
    pub duration_ms: u64,
}

/// A resolved command: name, program alternatives, arguments.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    programs: Vec<String>,
    args: Vec<String>,
}

fn specs(cfg: &PackagesSection) -> Vec<Spec> {
    match &cfg.commands {
        Some(map) => map
            .iter()
            .filter_map(|(name, argv)| {
                let (program, args) = argv.split_first()?;
                Some(Spec {
                    name: name.clone(),
                    programs: vec![program.clone()],
                    args: args.to_vec(),
                })
            })
            .collect(),
        None => DEFAULT_COMMANDS
            .iter()
            .map(|(name, programs, args)| Spec {
                name: (*name).into(),
                programs: programs.iter().map(|p| p.to_string()).collect(),
                args: args.iter().map(|a| a.to_string()).collect(),
            })
            .collect(),
    }
}

/// Run every configured command (in parallel) and collect the lists.
pub fn capture(cfg: &PackagesSection) -> Captured {
    let started = Instant::now();
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let max = cfg.max_output_kb.saturating_mul(1024);
    let specs = specs(cfg);
    // No scratch directory (temp dir unwritable): run without one rather than not at all.
    let scratch = tempfile::Builder::new()
        .prefix("dotfiles-backup-packages-")
        .tempdir()
        .ok();
    let scratch = scratch.as_ref().map(|d| d.path());
    let results: Vec<(CaptureOutcome, Option<PackageList>, Option<Warning>)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = specs
                .iter()
                .map(|spec| s.spawn(move || run_one(spec, timeout, max, scratch)))
                .collect();
            handles
                .into_iter()
                .zip(&specs)
                .map(|(h, spec)| {
                    h.join().unwrap_or_else(|_| {
                        let o = outcome(spec, "failed", String::new());
                        let w = Warning::new(
                            "package_capture_failed",
                            format!("package list `{}`: internal error", spec.name),
                        );
                        (o, None, Some(w))
                    })
                })
                .collect()
        });
    let mut out = Captured::default();
    for (o, list, w) in results {
        out.outcomes.push(o);
        out.lists.extend(list);
        out.warnings.extend(w);
    }
    out.lists.sort_by(|a, b| a.name.cmp(&b.name));
    out.duration_ms = started.elapsed().as_millis() as u64;
    out
}

fn outcome(spec: &Spec, status: &'static str, command: String) -> CaptureOutcome {
    CaptureOutcome {
        name: spec.name.clone(),
        status,
        command,
        packages: 0,
        bytes: 0,
        duration_ms: 0,
    }
}

fn find(programs: &[String]) -> Option<PathBuf> {
    programs.iter().find_map(|p| which::which(p).ok())
}

/// Read a pipe to the end, keeping at most `max + 1` bytes (one more reveals "too large").
fn drain(mut r: impl Read, max: u64) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = (&mut r).take(max + 1).read_to_end(&mut kept);
    // Keep reading so the child never blocks on a full pipe.
    let _ = std::io::copy(&mut r, &mut std::io::sink());
    kept
}

fn run_one(
    spec: &Spec,
    timeout: Duration,
    max: u64,
    scratch: Option<&std::path::Path>,
) -> (CaptureOutcome, Option<PackageList>, Option<Warning>) {
    use wait_timeout::ChildExt;
    let started = Instant::now();
    let Some(path) = find(&spec.programs) else {
        return (
            outcome(spec, "missing", spec.programs.join(" or ")),
            None,
            None,
        );
    };
    let mut argv = vec![path.to_string_lossy().into_owned()];
    argv.extend(spec.args.iter().cloned());
    let shown = argv.join(" ");
    let fail = |status: &'static str, why: String| {
        let mut o = outcome(spec, status, shown.clone());
        o.duration_ms = started.elapsed().as_millis() as u64;
        let w = Warning::new(
            "package_capture_failed",
            format!(
                "package list `{}` (`{shown}`) not recorded: {why}",
                spec.name
            ),
        );
        (o, None, Some(w))
    };
    let mut cmd = Command::new(&path);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        // Its own process group, so a timeout kills the command's children too.
        .process_group(0);
    if let Some(dir) = scratch {
        cmd.envs(SCRATCH_ENV.iter().map(|(k, sub)| (k, dir.join(sub))))
            .env("npm_config_update_notifier", "false")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail("failed", format!("could not start it: {e}")),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return fail("failed", "its output could not be captured".into());
    };
    let out_reader = std::thread::spawn(move || drain(stdout, max));
    let err_reader = std::thread::spawn(move || drain(stderr, 4096));
    let status = match child.wait_timeout(timeout) {
        Ok(Some(st)) => Some(st),
        Ok(None) | Err(_) => None,
    };
    if status.is_none() {
        kill_group(child.id());
        let _ = child.kill();
        let _ = child.wait();
    } else {
        // Leftover children of a finished command would hold the pipes open
        // and keep the readers waiting; the group is ours alone.
        kill_group(child.id());
    }
    // The group is dead, so the pipes close and the readers end.
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return fail(
            "timeout",
            format!(
                "it did not finish within {} s and was stopped; raise packages.timeout_secs if it is just slow",
                timeout.as_secs()
            ),
        );
    };
    if !status.success() {
        let err = String::from_utf8_lossy(&stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return fail(
            "failed",
            format!(
                "it exited with {}{}",
                status
                    .code()
                    .map(|c| format!("status {c}"))
                    .unwrap_or_else(|| "a signal".into()),
                if first.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first.trim())
                }
            ),
        );
    }
    if stdout.len() as u64 > max {
        return fail(
            "failed",
            format!(
                "its output is larger than {} KiB; raise packages.max_output_kb to keep it",
                max / 1024
            ),
        );
    }
    let text = String::from_utf8_lossy(&stdout).into_owned();
    let list = PackageList {
        name: spec.name.clone(),
        command: argv,
        sha256: Hash::of(&stdout),
        bytes: stdout.len() as u64,
        output: text,
    };
    let mut o = outcome(spec, "captured", shown);
    o.packages = parse(&list).len() as u64;
    o.bytes = list.bytes;
    o.duration_ms = started.elapsed().as_millis() as u64;
    (o, Some(list), None)
}

fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Packages in a list: name → version (empty when the manager gives none).
///
/// The format follows the capture's name for the default ones; other lists
/// are one package per line.
pub fn parse(list: &PackageList) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, raw) in list.output.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if list.name == "brewfile" {
            // `tap "homebrew/cask"`, `brew "git"`, `cask "iterm2"`,
            // `mas "Xcode", id: 497799835`: keyed `kind name`, options as the value.
            let (name, options) = brewfile_line(line);
            out.insert(name, options);
            continue;
        }
        let (name, version) = match list.name.as_str() {
            // `git 2.43.0 2.44.0`: several installed versions are kept together.
            "brew" => match line.split_once(char::is_whitespace) {
                Some((n, v)) => (n, v.trim()),
                None => (line, ""),
            },
            // `requests==2.31.0`, `pkg @ file:///…`
            "pip" => line
                .split_once("==")
                .or_else(|| line.split_once(" @ "))
                .map(|(n, v)| (n.trim(), v.trim()))
                .unwrap_or((line, "")),
            // `ms-python.python@2024.2.1`
            "code" => line.split_once('@').unwrap_or((line, "")),
            // First line is the global prefix; then `├── npm@10.2.4` (`@scope/x@1.0.0`).
            "npm" => {
                if i == 0 && !line.contains("── ") {
                    continue;
                }
                let item = line
                    .trim_start_matches(|c: char| !c.is_ascii_alphanumeric() && c != '@')
                    .trim();
                if item.is_empty() || item == "(empty)" {
                    continue;
                }
                match item.rfind('@') {
                    Some(at) if at > 0 => (&item[..at], &item[at + 1..]),
                    _ => (item, ""),
                }
            }
            _ => (line, ""),
        };
        out.insert(name.to_string(), version.to_string());
    }
    out
}

/// A package whose version differs between two lists.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Changed {
    /// Package.
    pub name: String,
    /// Version before.
    pub from: String,
    /// Version after.
    pub to: String,
}

/// One manager's differences between two snapshots.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PackageDiff {
    /// Capture name (`brew`, `apt`, …).
    pub name: String,
    /// `compared`, or `only_in_from` / `only_in_to` when one snapshot has no
    /// list for it (nothing is reported as added or removed then).
    pub status: &'static str,
    /// Installed between the two (name with version when known).
    pub added: Vec<String>,
    /// Removed between the two.
    pub removed: Vec<String>,
    /// Version changes.
    pub changed: Vec<Changed>,
}

/// One Brewfile line as (`kind name`, options); `kind` alone when unquoted.
fn brewfile_line(line: &str) -> (String, String) {
    let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match rest.strip_prefix('"').and_then(|r| r.split_once('"')) {
        Some((name, opts)) => (
            format!("{kind} {name}"),
            opts.trim_start_matches(',').trim().to_string(),
        ),
        None => (line.to_string(), String::new()),
    }
}

fn with_version(n: &str, v: &str) -> String {
    if v.is_empty() {
        n.to_string()
    } else {
        format!("{n} {v}")
    }
}

/// Differences per manager between snapshot `from` and snapshot `to`.
/// Managers with identical output are left out.
pub fn diff(from: Option<&[PackageList]>, to: Option<&[PackageList]>) -> Vec<PackageDiff> {
    let a: BTreeMap<&str, &PackageList> = from
        .unwrap_or_default()
        .iter()
        .map(|l| (l.name.as_str(), l))
        .collect();
    let b: BTreeMap<&str, &PackageList> = to
        .unwrap_or_default()
        .iter()
        .map(|l| (l.name.as_str(), l))
        .collect();
    let mut names: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let mut d = PackageDiff {
            name: name.to_string(),
            status: "compared",
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
        };
        match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) => {
                if x.sha256 == y.sha256 {
                    continue;
                }
                let (px, py) = (parse(x), parse(y));
                for (n, v) in &py {
                    match px.get(n) {
                        None => d.added.push(with_version(n, v)),
                        Some(old) if old != v => d.changed.push(Changed {
                            name: n.clone(),
                            from: old.clone(),
                            to: v.clone(),
                        }),
                        Some(_) => {}
                    }
                }
                for (n, v) in &px {
                    if !py.contains_key(n) {
                        d.removed.push(with_version(n, v));
                    }
                }
                if d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty() {
                    continue;
                }
            }
            (Some(_), None) => d.status = "only_in_from",
            (None, Some(_)) => d.status = "only_in_to",
            (None, None) => continue,
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str, output: &str) -> PackageList {
        PackageList {
            name: name.into(),
            command: vec![name.into()],
            sha256: Hash::of(output.as_bytes()),
            bytes: output.len() as u64,
            output: output.into(),
        }
    }

    #[test]
    fn parses_a_brewfile_by_kind_and_name() {
        let b = parse(&list(
            "brewfile",
            "tap \"homebrew/bundle\"\nbrew \"git\"\nbrew \"postgresql@16\", restart_service: :changed\ncask \"iterm2\"\nmas \"Xcode\", id: 497799835\nvscode \"ms-python.python\"\n",
        ));
        assert_eq!(b.len(), 6, "{b:?}");
        assert_eq!(b["tap homebrew/bundle"], "");
        assert_eq!(b["brew postgresql@16"], "restart_service: :changed");
        assert_eq!(b["cask iterm2"], "");
        assert_eq!(b["mas Xcode"], "id: 497799835");
        assert!(b.contains_key("vscode ms-python.python"));
    }

    #[test]
    fn parses_each_default_format() {
        let brew = parse(&list("brew", "git 2.43.0\nripgrep 14.1.0 14.0.0\n"));
        assert_eq!(brew["ripgrep"], "14.1.0 14.0.0");
        let pip = parse(&list("pip", "requests==2.31.0\nlocal @ file:///x\n"));
        assert_eq!(pip["requests"], "2.31.0");
        assert_eq!(pip["local"], "file:///x");
        let npm = parse(&list(
            "npm",
            "/usr/lib\n├── corepack@0.29.4\n└── @scope/tool@1.2.3\n",
        ));
        assert_eq!(npm.len(), 2, "{npm:?}");
        assert_eq!(npm["@scope/tool"], "1.2.3");
        assert_eq!(npm["corepack"], "0.29.4");
        let code = parse(&list("code", "ms-python.python@2024.2.1\n"));
        assert_eq!(code["ms-python.python"], "2024.2.1");
        let apt = parse(&list("apt", "curl\ngit\n\n"));
        assert_eq!(apt.len(), 2);
        assert_eq!(apt["curl"], "");
    }

    #[test]
    fn diff_reports_added_removed_changed_and_one_sided() {
        let a = vec![
            list("apt", "curl\ngit\n"),
            list("pip", "requests==2.30.0\nsix==1.0\n"),
            list("brew", "x 1\n"),
        ];
        let b = vec![
            list("apt", "curl\nzsh\n"),
            list("pip", "requests==2.31.0\nsix==1.0\n"),
            list("npm", "/usr\n└── npm@10\n"),
            list("brew", "x 1\n"),
        ];
        let d = diff(Some(&a), Some(&b));
        let by: BTreeMap<&str, &PackageDiff> = d.iter().map(|x| (x.name.as_str(), x)).collect();
        assert!(!by.contains_key("brew"), "identical lists are left out");
        assert_eq!(by["apt"].added, vec!["zsh"]);
        assert_eq!(by["apt"].removed, vec!["git"]);
        assert_eq!(
            by["pip"].changed,
            vec![Changed {
                name: "requests".into(),
                from: "2.30.0".into(),
                to: "2.31.0".into()
            }]
        );
        assert_eq!(by["npm"].status, "only_in_to");
        assert!(by["npm"].added.is_empty());
        assert!(diff(None, None).is_empty());
    }
}
