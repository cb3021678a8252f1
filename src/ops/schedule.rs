//! `backup-create --schedule daily|hourly|off`: protection between
//! bootstraps. Installs (or removes) a systemd user timer + service on Linux
//! or a launchd agent on macOS that runs, in order, a checkpoint of
//! everything configured (`backup-create --label scheduled --tag scheduled`:
//! kind `backup`, so the `[retention]` keep-last/daily/weekly/... policy
//! thins them out, where manual checkpoints would be kept until removed),
//! the retention policy (`backup-prune`) and the quick health check
//! (`backup-checkpoint --health-check`).
//!
//! The files are rendered from the running binary's directory, the
//! repository and the config file only, so installing twice writes the same
//! bytes and reports `changed: false`. They are written with the crash-safe
//! path ([`crate::atomic`]). A file that differs from what this build would
//! write (edited by hand) is kept beside as `NAME.edited~` before it is
//! replaced or removed. Enabling (`systemctl --user`, `launchctl`) is best
//! effort: where there is no user manager (a container, CI, root without a
//! session) the files are written and a `schedule_not_activated` warning
//! names the command to run. The health check reads the marker line of the
//! installed file ([`installed`]) to know the interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, IoContext, Result};
use crate::paths::display_path;
use crate::report::{Envelope, Warning};

/// The systemd unit name (`.service` and `.timer`).
pub const UNIT: &str = "dotfiles-backup-scheduled";
/// The launchd label (and plist name).
pub const LABEL: &str = "io.dotfiles-backup.scheduled";
/// The label and tag of scheduled checkpoints (the run log is searched for it).
pub const RUN_LABEL: &str = "scheduled";
/// First-line marker naming the interval; the health check reads it.
const MARKER: &str = "dotfiles-backup schedule: ";
/// A scheduler command that has not answered in this time is given up on.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Once a day.
    Daily,
    /// Once an hour.
    Hourly,
    /// Remove the schedule.
    Off,
}

impl Interval {
    /// `daily`, `hourly`, `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Daily => "daily",
            Interval::Hourly => "hourly",
            Interval::Off => "off",
        }
    }

    /// Seconds between runs (0 for off).
    pub fn secs(self) -> u64 {
        match self {
            Interval::Daily => 86_400,
            Interval::Hourly => 3_600,
            Interval::Off => 0,
        }
    }
}

/// Which service manager gets the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// A systemd user timer (Linux).
    Systemd,
    /// A launchd agent (macOS).
    Launchd,
}

/// The platform's scheduler; `BACKUP_SCHEDULER=systemd|launchd` overrides
/// it (tests render the plist on Linux with it).
pub fn scheduler() -> Scheduler {
    match std::env::var("BACKUP_SCHEDULER").as_deref() {
        Ok("launchd") => Scheduler::Launchd,
        Ok("systemd") => Scheduler::Systemd,
        _ if cfg!(target_os = "macos") => Scheduler::Launchd,
        _ => Scheduler::Systemd,
    }
}

/// Where the scheduler's files live for this user.
pub fn file_paths(s: Scheduler, home: &Path) -> Vec<PathBuf> {
    match s {
        Scheduler::Systemd => {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(".config"));
            let dir = base.join("systemd/user");
            vec![
                dir.join(format!("{UNIT}.service")),
                dir.join(format!("{UNIT}.timer")),
            ]
        }
        Scheduler::Launchd => vec![home
            .join("Library/LaunchAgents")
            .join(format!("{LABEL}.plist"))],
    }
}

/// The installed schedule, if any: its interval and the file's age in seconds.
pub fn installed(home: &Path) -> Option<(Interval, PathBuf, u64)> {
    let path = file_paths(scheduler(), home).pop()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let interval = match text.lines().find_map(|l| l.split(MARKER).nth(1))? {
        t if t.starts_with("daily") => Interval::Daily,
        t if t.starts_with("hourly") => Interval::Hourly,
        _ => return None,
    };
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_secs());
    Some((interval, path, age))
}

/// What the job runs with: the binaries beside this one, the repository and the config file.
struct Job {
    bin_dir: PathBuf,
    args: Vec<PathBuf>,
}

impl Job {
    fn from(settings: &Settings) -> Result<Job> {
        let exe = std::env::current_exe().ctx(
            "finding this program's directory",
            Path::new("/proc/self/exe"),
        )?;
        let bin_dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut args = vec![PathBuf::from("--repo"), absolute(&settings.repo)];
        if let Some(c) = &settings.config_file {
            args.push("--config".into());
            args.push(absolute(c));
        }
        for p in std::iter::once(&bin_dir).chain(&args) {
            if p.as_os_str()
                .to_str()
                .is_none_or(|s| s.chars().any(char::is_control))
            {
                return Err(Error::usage(
                    "schedule_path_unsupported",
                    format!(
                        "{} has a control character or is not UTF-8; a schedule file cannot name it",
                        display_path(p)
                    ),
                )
                .with_path(p)
                .with_hint("move the repository, config or binaries to a plain path and run again"));
            }
        }
        Ok(Job { bin_dir, args })
    }

    /// Every argument after `sh -c SCRIPT`: `$0` is the binaries' directory.
    fn sh_args(&self) -> Vec<String> {
        std::iter::once(&self.bin_dir)
            .chain(&self.args)
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The job: checkpoint, then prune, then health, each run whatever the one
/// before did; the first non-zero exit code is the job's (3, partial,
/// counts: the scheduler shows the run as failed and the health check and
/// run log say why).
const SCRIPT: &str = r#""$0/backup-create" --label scheduled --tag scheduled "$@"; a=$?; "$0/backup-prune" "$@"; b=$?; "$0/backup-checkpoint" --health-check "$@"; c=$?; for r in $a $b $c; do [ "$r" = 0 ] || exit "$r"; done"#;

/// systemd's quoting for one `ExecStart=` word.
fn systemd_word(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The files for `interval` (not off), in the order of [`file_paths`].
fn render(s: Scheduler, interval: Interval, job: &Job, home: &Path) -> Vec<String> {
    let how = format!(
        "written by `backup-create --schedule {0}`; remove with `backup-create --schedule off`",
        interval.as_str()
    );
    match s {
        Scheduler::Systemd => {
            let mut exec = vec!["/bin/sh".to_string(), "-c".into(), SCRIPT.into()];
            exec.extend(job.sh_args());
            let exec: Vec<String> = exec.iter().map(|w| systemd_word(w)).collect();
            let service = format!(
                "# {MARKER}{i}\n# {how}\n[Unit]\nDescription=dotfiles-backup: scheduled checkpoint, retention and health check\n\n[Service]\nType=oneshot\nExecStart={exec}\nNice=10\nIOSchedulingClass=idle\n",
                i = interval.as_str(),
                exec = exec.join(" ")
            );
            let timer = format!(
                "# {MARKER}{i}\n# {how}\n[Unit]\nDescription=dotfiles-backup: scheduled checkpoint ({i})\n\n[Timer]\nOnCalendar={i}\nPersistent=true\nRandomizedDelaySec={delay}\nUnit={UNIT}.service\n\n[Install]\nWantedBy=timers.target\n",
                i = interval.as_str(),
                delay = if interval == Interval::Hourly { "2min" } else { "10min" }
            );
            vec![service, timer]
        }
        Scheduler::Launchd => {
            let mut args = vec!["/bin/sh".to_string(), "-c".into(), SCRIPT.into()];
            args.extend(job.sh_args());
            let args: String = args
                .iter()
                .map(|a| format!("    <string>{}</string>\n", xml(a)))
                .collect();
            let log = home.join("Library/Logs/dotfiles-backup-scheduled.log");
            let log = xml(&log.to_string_lossy());
            vec![format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<!-- {MARKER}{i} (XML comments cannot hold two dashes: see backup-create(1) to remove it) -->\n<plist version=\"1.0\">\n<dict>\n  <key>Label</key>\n  <string>{LABEL}</string>\n  <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n  <key>StartInterval</key>\n  <integer>{secs}</integer>\n  <key>RunAtLoad</key>\n  <false/>\n  <key>ProcessType</key>\n  <string>Background</string>\n  <key>LowPriorityIO</key>\n  <true/>\n  <key>StandardOutPath</key>\n  <string>{log}</string>\n  <key>StandardErrorPath</key>\n  <string>{log}</string>\n</dict>\n</plist>\n",
                i = interval.as_str(),
                secs = interval.secs()
            )]
        }
    }
}

/// One file in the `schedule` payload.
#[derive(Debug, Serialize)]
pub struct FileAction {
    /// Where.
    pub path: String,
    /// `written`, `unchanged`, `removed` or `absent`.
    pub action: &'static str,
    /// Where a hand-edited version was kept before it was replaced or removed.
    pub edited_copy: Option<String>,
}

/// The `schedule` payload (docs/json.md).
#[derive(Debug, Serialize)]
pub struct ScheduleReport {
    /// `daily`, `hourly` or `off`.
    pub interval: Interval,
    /// `systemd` or `launchd`.
    pub scheduler: Scheduler,
    /// Each file and what happened to it.
    pub files: Vec<FileAction>,
    /// Whether the service manager accepted the change (false: see the
    /// `schedule_not_activated` warning and run `commands` yourself).
    pub activated: bool,
    /// The service-manager commands that make the change take effect.
    pub commands: Vec<String>,
}

/// `backup-create --schedule INTERVAL`.
pub fn run(settings: &Settings, interval: Interval, env: &mut Envelope) -> Result<()> {
    let home = crate::paths::home_dir().ok_or_else(|| {
        Error::usage(
            "no_home",
            "HOME is not set to an absolute path; the schedule files go beneath it",
        )
        .with_hint("set HOME and run again")
    })?;
    let sched = scheduler();
    let job = Job::from(settings)?;
    let paths = file_paths(sched, &home);
    let pristine: Vec<Vec<String>> = [Interval::Daily, Interval::Hourly]
        .iter()
        .map(|i| render(sched, *i, &job, &home))
        .collect();
    let mut files = Vec::new();
    for (n, path) in paths.iter().enumerate() {
        let old = std::fs::read(path).ok();
        let ours = |b: &[u8]| pristine.iter().any(|r| r[n].as_bytes() == b);
        let want = (interval != Interval::Off)
            .then(|| render(sched, interval, &job, &home).swap_remove(n));
        let action = match (&old, &want) {
            (None, None) if path.symlink_metadata().is_err() => "absent",
            (Some(o), Some(w)) if o == w.as_bytes() => "unchanged",
            (_, Some(_)) => "written",
            (_, None) => "removed",
        };
        let edited_copy = match &old {
            Some(o) if action != "unchanged" && !ours(o) => Some(keep_edited(path, o, env)?),
            _ => None,
        };
        match (&want, action) {
            (Some(w), "written") => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                std::fs::create_dir_all(dir)
                    .ctx("creating the scheduler's directory", dir)
                    .and_then(|()| crate::atomic::write_file_atomic(path, w.as_bytes(), 0o644))
                    .map_err(|e| e.with_hint(format!(
                        "make {} writable for this user (or point XDG_CONFIG_HOME elsewhere on Linux) and run again; files already in place are complete",
                        display_path(dir)
                    )))?;
            }
            (None, "removed") => {
                std::fs::remove_file(path).ctx("removing the schedule file", path)?;
                if let Some(dir) = path.parent() {
                    crate::atomic::Dir::open(dir)?.sync()?;
                }
            }
            _ => {}
        }
        files.push(FileAction {
            path: display_path(path),
            action,
            edited_copy,
        });
    }
    let changed = files
        .iter()
        .any(|f| matches!(f.action, "written" | "removed"));
    let present = interval != Interval::Off || changed;
    let commands = if present {
        commands(sched, interval, &paths, changed)
    } else {
        Vec::new()
    };
    let activated = activate(&commands, env);
    env.changed = changed;
    env.put(
        "schedule",
        &ScheduleReport {
            interval,
            scheduler: sched,
            files,
            activated,
            commands: commands.iter().map(|c| c.join(" ")).collect(),
        },
    );
    Ok(())
}

/// Copy a hand-edited file to `NAME.edited~` beside it (crash-safe), warn, and say where.
fn keep_edited(path: &Path, old: &[u8], env: &mut Envelope) -> Result<String> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".edited~");
    let copy = PathBuf::from(name);
    crate::atomic::write_file_atomic(&copy, old, 0o644)?;
    let shown = display_path(&copy);
    env.warnings.push(Warning::at(
        "schedule_file_edited",
        shown.clone(),
        format!(
            "{} differed from what `backup-create --schedule` writes (edited by hand?); it was kept as {shown}",
            display_path(path)
        ),
    ));
    Ok(shown)
}

/// The service-manager commands for this change, in order.
fn commands(
    s: Scheduler,
    interval: Interval,
    paths: &[PathBuf],
    changed: bool,
) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let timer = format!("{UNIT}.timer");
    match (s, interval) {
        (Scheduler::Systemd, Interval::Off) => vec![
            v(&["systemctl", "--user", "disable", "--now", &timer]),
            v(&["systemctl", "--user", "daemon-reload"]),
        ],
        (Scheduler::Systemd, _) => {
            let mut out = Vec::new();
            if changed {
                out.push(v(&["systemctl", "--user", "daemon-reload"]));
            }
            out.push(v(&["systemctl", "--user", "enable", "--now", &timer]));
            out
        }
        (Scheduler::Launchd, i) => {
            let domain = format!("gui/{}", rustix::process::getuid().as_raw());
            let service = format!("{domain}/{LABEL}");
            let plist = paths[0].to_string_lossy().into_owned();
            match (i, changed) {
                (Interval::Off, _) => vec![v(&["launchctl", "bootout", &service])],
                (_, true) => vec![
                    v(&["launchctl", "bootout", &service]),
                    v(&["launchctl", "bootstrap", &domain, &plist]),
                ],
                (_, false) => vec![v(&["launchctl", "enable", &service])],
            }
        }
    }
}

/// Run the commands; a failure (no user manager, no binary) is a warning
/// naming what to run, never a failed command. `launchctl bootout` of a job
/// that is not loaded fails harmlessly and is not reported.
fn activate(commands: &[Vec<String>], env: &mut Envelope) -> bool {
    for (n, c) in commands.iter().enumerate() {
        if let Err(why) = run_command(c) {
            if c.get(1).is_some_and(|a| a == "bootout") {
                continue;
            }
            let rest: Vec<String> = commands[n..].iter().map(|c| c.join(" ")).collect();
            env.warnings.push(Warning::new(
                "schedule_not_activated",
                format!(
                    "the schedule files are in place but `{}` failed ({why}); run yourself: {}",
                    c.join(" "),
                    rest.join(" && ")
                ),
            ));
            return false;
        }
    }
    true
}

fn run_command(c: &[String]) -> std::result::Result<(), String> {
    use std::process::{Command, Stdio};
    use wait_timeout::ChildExt;
    let mut child = Command::new(&c[0])
        .args(&c[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", c[0]))?;
    match child.wait_timeout(COMMAND_TIMEOUT) {
        Ok(Some(st)) if st.success() => Ok(()),
        Ok(Some(st)) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.by_ref().take(4096).read_to_string(&mut err);
            }
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("{st}: {}", last.trim()))
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("no answer in {} s", COMMAND_TIMEOUT.as_secs()))
        }
    }
}
