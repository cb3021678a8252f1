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

pub mod apply;
mod cache;
pub mod key;
pub mod plan;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a command ended its output pipes may take to close.
const PIPE_GRACE: Duration = Duration::from_millis(500);

use serde::Serialize;

use crate::config::PackagesSection;
use crate::hash::Hash;
use crate::repo::snapshot::PackageList;
use crate::report::Warning;
use cache::Cache;

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

/// Also given to every capture command: no update checks, no analytics,
/// no pip cache at all (`PIP_NO_CACHE_DIR`; `PIP_CACHE_DIR` is the fallback
/// for pips that ignore it).
pub const QUIET_ENV: &[(&str, &str)] = &[
    ("npm_config_update_notifier", "false"),
    ("npm_config_fund", "false"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    ("PIP_NO_CACHE_DIR", "1"),
    ("HOMEBREW_NO_AUTO_UPDATE", "1"),
    ("HOMEBREW_NO_ANALYTICS", "1"),
    ("HOMEBREW_NO_ENV_HINTS", "1"),
];

/// How one capture went, as reported in the envelope's `packages` payload.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaptureOutcome {
    /// Capture name.
    pub name: String,
    /// `captured`, `missing` (program not on PATH), `failed` (non-zero exit,
    /// could not start, output too large) or `timeout`.
    pub status: &'static str,
    /// The list is the cached one: nothing its manager changes had changed.
    pub cached: bool,
    /// The command line (program path when found).
    pub command: String,
    /// Packages parsed from the output (captured only).
    pub packages: u64,
    /// Output bytes (captured only).
    pub bytes: u64,
    /// Wall time (of this run; 0 when cached).
    pub duration_ms: u64,
}

/// What [`capture`] found.
#[derive(Debug, Default)]
pub struct Captured {
    /// Lists to store in the record, sorted by name: the captured ones and a
    /// marker (`status` set, no output) for each failed or timed-out one.
    pub lists: Vec<PackageList>,
    /// One per configured command, in configured order.
    pub outcomes: Vec<CaptureOutcome>,
    /// `package_capture_failed` and `package_capture_timeout` warnings.
    pub warnings: Vec<Warning>,
    /// Wall time of the whole capture.
    pub duration_ms: u64,
    /// The cache file and its new content, when it changed ([`store_cache`]).
    pub cache_update: Option<(PathBuf, Vec<u8>)>,
}

impl Captured {
    /// Lists that were captured (not failure markers).
    pub fn known(&self) -> u64 {
        self.lists.iter().filter(|l| l.is_known()).count() as u64
    }
}

/// A resolved command: name, program alternatives, arguments.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    programs: Vec<String>,
    args: Vec<String>,
    /// One of [`DEFAULT_COMMANDS`] (its built-in key rule may apply).
    builtin: bool,
}

fn specs(cfg: &PackagesSection) -> Vec<Spec> {
    let all: Vec<Spec> = match &cfg.commands {
        Some(map) => map
            .iter()
            .filter_map(|(name, argv)| {
                let (program, args) = argv.split_first()?;
                Some(Spec {
                    name: name.clone(),
                    programs: vec![program.clone()],
                    args: args.to_vec(),
                    builtin: false,
                })
            })
            .collect(),
        None => DEFAULT_COMMANDS
            .iter()
            .map(|(name, programs, args)| Spec {
                name: (*name).into(),
                programs: programs.iter().map(|p| p.to_string()).collect(),
                args: args.iter().map(|a| a.to_string()).collect(),
                builtin: true,
            })
            .collect(),
    };
    match &cfg.managers {
        Some(only) => all.into_iter().filter(|s| only.contains(&s.name)).collect(),
        None => all,
    }
}

/// What to do for one capture after looking at the cache.
enum Plan {
    /// Missing program, or a cache hit.
    Done(CaptureOutcome, Option<PackageList>),
    /// Run it (with the key rule, when it can be cached).
    Run {
        program: PathBuf,
        argv: Vec<String>,
        rule: Option<key::Rule>,
    },
}

/// One capture's result.
type RunResult = (
    CaptureOutcome,
    Option<PackageList>,
    Option<Warning>,
    Option<cache::Entry>,
);

/// Run every configured command whose cached list cannot be vouched for (in
/// parallel) and collect the lists. `cache_file` is `<repo>/cache/packages`
/// (`None`, or `packages.cache = false`: no cache).
pub fn capture(cfg: &PackagesSection, cache_file: Option<&Path>) -> Captured {
    let started = Instant::now();
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let max = cfg.max_output_kb.saturating_mul(1024);
    let specs = specs(cfg);
    let cache_file = cache_file.filter(|_| cfg.cache);
    let old = cache_file.and_then(Cache::load).unwrap_or_default();
    let plans: Vec<Plan> = specs
        .iter()
        .map(|s| plan(cfg, s, &old, cache_file.is_some()))
        .collect();
    let must_run = plans.iter().any(|p| matches!(p, Plan::Run { .. }));
    // No scratch directory (temp dir unwritable): run without one rather than not at all.
    let scratch = must_run
        .then(|| {
            tempfile::Builder::new()
                .prefix("dotfiles-backup-packages-")
                .tempdir()
                .ok()
        })
        .flatten();
    let scratch = scratch.as_ref().map(|d| d.path());
    let results: Vec<RunResult> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .into_iter()
            .zip(&specs)
            .map(|(plan, spec)| match plan {
                Plan::Done(o, list) => Err(Box::new((o, list))),
                Plan::Run {
                    program,
                    argv,
                    rule,
                } => Ok(s.spawn(move || {
                    run_one(spec, &program, &argv, rule.as_ref(), timeout, max, scratch)
                })),
            })
            .collect();
        handles
            .into_iter()
            .zip(&specs)
            .map(|(h, spec)| match h {
                Err(done) => (done.0, done.1, None, None),
                Ok(h) => h.join().unwrap_or_else(|_| {
                    let o = outcome(spec, "failed", String::new());
                    let w = Warning::new(
                        "package_capture_failed",
                        format!("package list `{}`: internal error", spec.name),
                    );
                    (o, None, Some(w), None)
                }),
            })
            .collect()
    });
    let mut out = Captured::default();
    let mut new = Cache::default();
    for (o, list, w, entry) in results {
        // Still-valid entries are kept; a failed or changed capture drops its old one.
        if let Some(e) = entry {
            new.entries.insert(o.name.clone(), e);
        } else if o.cached {
            if let Some(e) = old.entries.get(&o.name) {
                new.entries.insert(o.name.clone(), e.clone());
            }
        }
        out.outcomes.push(o);
        out.lists.extend(list);
        out.warnings.extend(w);
    }
    // Entries of captures not run this time (limited by `managers`) stay.
    for (name, e) in &old.entries {
        if !specs.iter().any(|s| &s.name == name) {
            new.entries.insert(name.clone(), e.clone());
        }
    }
    if let Some(path) = cache_file {
        if new != old {
            out.cache_update = new.encode().map(|b| (path.to_path_buf(), b));
        }
    }
    out.lists.sort_by(|a, b| a.name.cmp(&b.name));
    out.duration_ms = started.elapsed().as_millis() as u64;
    out
}

/// Write the cache [`capture`] updated, if its directory exists (the
/// repository's `cache/`). Best effort: a cache that cannot be written only
/// costs the next checkpoint the time of asking the managers again.
pub fn store_cache(c: &Captured) {
    if let Some((path, bytes)) = &c.cache_update {
        if path.parent().is_some_and(Path::is_dir) {
            let _ = crate::atomic::write_file_atomic(path, bytes, 0o600);
        }
    }
}

fn plan(cfg: &PackagesSection, spec: &Spec, old: &Cache, caching: bool) -> Plan {
    let Some(program) = find(&spec.programs) else {
        return Plan::Done(outcome(spec, "missing", spec.programs.join(" or ")), None);
    };
    let mut argv = vec![program.to_string_lossy().into_owned()];
    argv.extend(spec.args.iter().cloned());
    let rule = if !caching {
        None
    } else if let Some(paths) = cfg.watch.as_ref().and_then(|w| w.get(&spec.name)) {
        Some(key::configured(&program, paths))
    } else if spec.builtin {
        key::builtin(&spec.name, &program)
    } else {
        None
    };
    if let (Some(rule), Some(e)) = (&rule, old.entries.get(&spec.name)) {
        let now_ns = crate::time::now_ns();
        let age = now_ns / 1_000_000_000 - e.captured_at;
        if e.list.command == argv && (0..cache::MAX_AGE_SECS).contains(&age) {
            let k = key::compute(&argv, rule, &e.discovered, now_ns);
            if k.digest == e.key && !k.racy {
                let mut o = outcome(spec, "captured", argv.join(" "));
                o.cached = true;
                o.packages = parse(&e.list).len() as u64;
                o.bytes = e.list.bytes;
                return Plan::Done(o, Some(e.list.clone()));
            }
        }
    }
    Plan::Run {
        program,
        argv,
        rule,
    }
}

fn outcome(spec: &Spec, status: &'static str, command: String) -> CaptureOutcome {
    CaptureOutcome {
        name: spec.name.clone(),
        status,
        cached: false,
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
/// Read `r` on a thread into a shared buffer (at most `max + 1` bytes kept,
/// the rest read and dropped so the child never blocks on a full pipe).
fn drain(mut r: impl Read + Send + 'static, max: u64) -> Drained {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done) = mpsc::channel();
    let sink = Arc::clone(&kept);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                    let room = (max + 1).saturating_sub(kept.len() as u64) as usize;
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done_tx.send(());
    });
    Drained { kept, done }
}

/// A pipe being read by [`drain`].
struct Drained {
    kept: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Drained {
    /// What was read once the pipe closed, or by `until` at the latest: a
    /// detached grandchild (an update notifier started with `setsid`) can hold
    /// the pipe open forever, and the command's own output is already in it
    /// once the command has exited.
    fn take(self, until: Instant) -> Vec<u8> {
        let _ = self
            .done
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Learn the witnesses a rule has to ask for, then compute the key (before
/// the capture runs, so a change during it shows as a different key next
/// time). `None`: not cacheable this time.
fn key_before_run(
    program: &Path,
    argv: &[String],
    rule: &key::Rule,
    deadline: Instant,
    scratch: Option<&Path>,
) -> Option<(Hash, Vec<key::Witness>)> {
    let discovered = match &rule.discover {
        None => Vec::new(),
        Some(how) => {
            let (prog, args): (&Path, Vec<String>) = match how {
                key::Discover::Python { interpreter, args } => {
                    let mut a = args.clone();
                    a.extend(["-c".to_string(), key::PYTHON_PATHS.to_string()]);
                    (interpreter, a)
                }
                key::Discover::NpmRoot => (program, vec!["root".into(), "-g".into()]),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let out = exec(prog, &args, left, 64 * 1024, scratch).ok()?;
            key::discovered(how, &out)?
        }
    };
    let k = key::compute(argv, rule, &discovered, crate::time::now_ns());
    (!k.racy).then_some((k.digest, discovered))
}

fn run_one(
    spec: &Spec,
    program: &Path,
    argv: &[String],
    rule: Option<&key::Rule>,
    timeout: Duration,
    max: u64,
    scratch: Option<&Path>,
) -> RunResult {
    let started = Instant::now();
    let deadline = started + timeout;
    let shown = argv.join(" ");
    let keyed = rule.and_then(|r| key_before_run(program, argv, r, deadline, scratch));
    let left = deadline.saturating_duration_since(Instant::now());
    let result = exec(program, &spec.args, left, max, scratch);
    let duration_ms = started.elapsed().as_millis() as u64;
    let stdout = match result {
        Ok(out) => out,
        Err(Failure::Timeout) => {
            let why = format!(
                "it did not finish within {} s and was stopped; raise packages.timeout_secs (or BACKUP_PACKAGES_TIMEOUT) if it is just slow",
                timeout.as_secs()
            );
            return failed(
                spec,
                argv,
                "timeout",
                "package_capture_timeout",
                why,
                duration_ms,
            );
        }
        Err(Failure::Failed(why)) => {
            return failed(
                spec,
                argv,
                "failed",
                "package_capture_failed",
                why,
                duration_ms,
            )
        }
    };
    if stdout.len() as u64 > max {
        let why = format!(
            "its output is larger than {} KiB; raise packages.max_output_kb to keep it",
            max / 1024
        );
        return failed(
            spec,
            argv,
            "failed",
            "package_capture_failed",
            why,
            duration_ms,
        );
    }
    let list = PackageList::captured(&spec.name, argv.to_vec(), &stdout);
    let mut o = outcome(spec, "captured", shown);
    o.packages = parse(&list).len() as u64;
    o.bytes = list.bytes;
    o.duration_ms = duration_ms;
    // Output that is not UTF-8 is stored lossily in the record; the cache
    // checks entries against their hash, so such a list is not cached.
    let entry = keyed
        .filter(|_| list.sha256 == Hash::of(list.output.as_bytes()))
        .map(|(key, discovered)| cache::Entry {
            key,
            discovered,
            captured_at: crate::time::now_ns() / 1_000_000_000,
            duration_ms,
            list: list.clone(),
        });
    (o, Some(list), None, entry)
}

/// The result of a failed capture: outcome, the marker stored in the record
/// (so "unknown" is never read as "nothing installed"), and the warning.
fn failed(
    spec: &Spec,
    argv: &[String],
    status: &'static str,
    code: &str,
    why: String,
    duration_ms: u64,
) -> RunResult {
    let shown = argv.join(" ");
    let mut o = outcome(spec, status, shown.clone());
    o.duration_ms = duration_ms;
    let marker = PackageList {
        name: spec.name.clone(),
        command: argv.to_vec(),
        sha256: Hash::of(b""),
        bytes: 0,
        output: String::new(),
        status: Some(status.to_string()),
    };
    let w = Warning::new(
        code,
        format!(
            "package list `{}` (`{shown}`) not recorded: {why}",
            spec.name
        ),
    );
    (o, Some(marker), Some(w), None)
}

/// Why [`exec`] gave no output.
pub(crate) enum Failure {
    /// Still running at the deadline (its process group was killed).
    Timeout,
    /// Could not start, exited non-zero, or its output could not be read.
    Failed(String),
}

/// Run `program args` in its own process group with stdin closed, the
/// scratch environment and a timeout; its stdout (at most `max + 1` bytes).
pub(crate) fn exec(
    program: &Path,
    args: &[String],
    timeout: Duration,
    max: u64,
    scratch: Option<&Path>,
) -> Result<Vec<u8>, Failure> {
    use wait_timeout::ChildExt;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        // Its own process group, so a timeout kills the command's children too.
        .process_group(0);
    crate::secrets::withhold_from(&mut cmd);
    if let Some(dir) = scratch {
        cmd.envs(SCRATCH_ENV.iter().map(|(k, sub)| (k, dir.join(sub))));
        cmd.envs(QUIET_ENV.iter().copied());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::Failed(format!("could not start it: {e}")))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Failure::Failed("its output could not be captured".into()));
    };
    let out_reader = drain(stdout, max);
    let err_reader = drain(stderr, 4096);
    let status = match child.wait_timeout(timeout) {
        Ok(Some(st)) => Some(st),
        Ok(None) | Err(_) => None,
    };
    // On a timeout the group is killed; after an exit, leftover children of
    // the command would hold the pipes open and keep the readers waiting.
    kill_group(child.id());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The group is dead, so the pipes close and the readers end, unless a
    // child that left the group holds them: the command's own output is in
    // the pipe by now, and a moment collects it.
    let until = Instant::now() + PIPE_GRACE;
    let stdout = out_reader.take(until);
    let stderr = err_reader.take(until);
    let Some(status) = status else {
        return Err(Failure::Timeout);
    };
    if !status.success() {
        let err = String::from_utf8_lossy(&stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(Failure::Failed(format!(
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
        )));
    }
    Ok(stdout)
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
    /// list for it, or `unknown_in_from` / `unknown_in_to` when its capture
    /// failed or timed out there (nothing is reported as added or removed then).
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
            // A failed or timed-out capture says nothing about what is installed.
            (Some(x), _) if !x.is_known() => d.status = "unknown_in_from",
            (_, Some(y)) if !y.is_known() => d.status = "unknown_in_to",
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
        PackageList::captured(name, vec![name.into()], output.as_bytes())
    }

    #[test]
    fn default_names_match_the_config_list() {
        let names: Vec<&str> = DEFAULT_COMMANDS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, crate::config::DEFAULT_PACKAGE_CAPTURES);
    }

    #[test]
    fn a_failed_capture_is_unknown_never_empty() {
        let mut failed = list("apt", "");
        failed.status = Some("timeout".into());
        let ok = list("apt", "curl\ngit\n");
        let d = diff(
            Some(std::slice::from_ref(&ok)),
            Some(std::slice::from_ref(&failed)),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].status, "unknown_in_to");
        assert!(d[0].removed.is_empty(), "not \"everything was removed\"");
        let d = diff(Some(&[failed]), Some(&[ok]));
        assert_eq!(d[0].status, "unknown_in_from");
        assert!(d[0].added.is_empty());
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
