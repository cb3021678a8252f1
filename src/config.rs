//! Configuration: the TOML file, environment overrides and command-line flags
//! merged into one resolved [`Settings`] value, with the source of each key
//! recorded (as ripgrep's `HiArgs` is built once from its low-level args).
//!
//! Precedence, lowest to highest: built-in defaults → config file → environment → flags.
//! Unknown keys and bad values are errors that name the key and the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::{display_path, expand_tilde, home_dir, normalize_lexically};

/// Default repository location.
pub const DEFAULT_REPO: &str = "~/.dotfiles-backups";
/// Default config file location.
pub const DEFAULT_CONFIG: &str = "~/.config/dotfiles-backup/config.toml";
/// Default ignore file (gitignore syntax, patterns relative to `$HOME`).
pub const DEFAULT_IGNORE_FILE: &str = "~/.config/dotfiles-backup/ignore";

/// Configuration-class roots tracked when the config names none. Roots that
/// do not exist are recorded as absent, so a rollback removes them if a phase
/// creates them.
pub const DEFAULT_CONFIG_ROOTS: &[&str] = &[
    "~/.profile",
    "~/.bashrc",
    "~/.bash_profile",
    "~/.bash_aliases",
    "~/.zshrc",
    "~/.zshenv",
    "~/.zprofile",
    "~/.inputrc",
    "~/.gitconfig",
    "~/.gitignore_global",
    "~/.vimrc",
    "~/.tmux.conf",
    "~/.ssh/config",
    "~/.config",
];

/// Excluded everywhere unless the config replaces the list (gitignore syntax).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".cache/",
    "node_modules/",
    "__pycache__/",
    "target/",
    ".DS_Store",
    "*.swp",
    "Cache/",
    "CachedData/",
    "GPUCache/",
    "Code Cache/",
    ".config/google-chrome/",
    ".config/chromium/",
    ".config/BraveSoftware/",
    ".local/share/Trash/",
];

/// Secret class: stored only age-encrypted, or skipped with a warning when no recipient is configured.
pub const DEFAULT_SECRET_PATTERNS: &[&str] = &[
    "**/.ssh/id_*",
    "**/*.pem",
    "**/*.key",
    "**/*.p12",
    "**/*.pfx",
    "**/.netrc",
    "**/.pgpass",
    "**/.git-credentials",
    "**/.aws/credentials",
    "**/.docker/config.json",
    "**/.config/containers/auth.json",
    "**/.kube/config",
    "**/.vault-token",
    "**/*.token",
    "**/.config/gh/hosts.yml",
    "**/.config/gcloud/credentials.db",
    "**/.config/gcloud/application_default_credentials.json",
    "**/.gnupg/private-keys-v1.d/**",
    "**/.gnupg/secring.gpg",
    "**/.config/sops/age/keys.txt",
    "**/.config/age/keys.txt",
    "**/.config/chezmoi/key.txt",
    "**/.config/git/credentials",
    "**/.config/rclone/rclone.conf",
    "**/.config/gcloud/legacy_credentials/**",
    "**/.config/gcloud/access_tokens.db",
    "**/.config/borg/keys/**",
    "**/.config/doctl/config.yaml",
    "**/.config/hub",
    "**/.config/hcloud/cli.toml",
    "**/.config/fly/config.yml",
    "**/.azure/accessTokens.json",
    "**/.azure/msal_token_cache.*",
    "**/.terraform.d/credentials.tfrc.json",
    "**/.cargo/credentials",
    "**/.cargo/credentials.toml",
    "**/.gem/credentials",
    "**/.m2/settings-security.xml",
];

/// Private class: stored, listed as private.
pub const DEFAULT_PRIVATE_PATTERNS: &[&str] = &[
    "**/.ssh/**",
    "**/.gnupg/**",
    "**/.aws/**",
    "**/.kube/**",
    "**/.npmrc",
    "**/.pypirc",
];

/// Public class: overrides the other two (public keys).
pub const DEFAULT_PUBLIC_PATTERNS: &[&str] = &["**/*.pub"];

/// Whether a checkpoint reads back its new packs before committing, when
/// nothing says otherwise. Off: on a first checkpoint of 20k files the
/// read-back from the device added about 27 %, over the 10 % bound for a
/// default (docs/performance.md, "Verify after write").
pub const DEFAULT_VERIFY_AFTER_WRITE: bool = false;

/// Files larger than this are skipped with a warning unless the config raises it.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    general: GeneralSection,
    #[serde(default)]
    repository: RepositorySection,
    #[serde(default)]
    track: TrackSection,
    #[serde(default)]
    classes: ClassesSection,
    #[serde(default)]
    safety: SafetySection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    space: SpaceSection,
    #[serde(default)]
    secrets: SecretsSection,
    #[serde(default)]
    external: ExternalSection,
    #[serde(default)]
    retry: RetrySection,
    #[serde(default)]
    packages: PackagesSection,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    hooks: HooksSection,
}

/// A hook command: an argv array run as is, or a string run by `/bin/sh -c`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HookCommand {
    /// `["notify-send", "backup failed"]`: no shell, no quoting.
    Argv(Vec<String>),
    /// `"jq -r .status | mail -s backup me@example.com"`: through `/bin/sh -c`.
    Shell(String),
}

/// `[hooks]`: commands run after a writer command ends (`src/hooks.rs`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSection {
    /// After a run with status `success`.
    pub on_success: Option<HookCommand>,
    /// After a run with status `partial`.
    pub on_partial: Option<HookCommand>,
    /// After a run with status `failed`.
    pub on_failure: Option<HookCommand>,
    /// Seconds a hook may run before its process group is killed.
    pub timeout_secs: u64,
}

impl Default for HooksSection {
    fn default() -> Self {
        HooksSection {
            on_success: None,
            on_partial: None,
            on_failure: None,
            timeout_secs: 10,
        }
    }
}

/// Names of the default package captures (`src/packages.rs` has their
/// commands; a unit test there keeps the two lists equal).
pub const DEFAULT_PACKAGE_CAPTURES: &[&str] = &["brew", "brewfile", "apt", "pip", "code", "npm"];

/// `[packages]`: package-manager lists recorded with checkpoints (`src/packages.rs`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PackagesSection {
    /// Capture at phase checkpoints (`backup-checkpoint auto PHASE`).
    pub auto: bool,
    /// Capture at named checkpoints (`backup-checkpoint manual NAME`).
    pub manual: bool,
    /// Seconds each command may run before it is killed (`BACKUP_PACKAGES_TIMEOUT`).
    pub timeout_secs: u64,
    /// Seconds each command of `backup-rollback --packages apply` may run (installs take longer than lists).
    pub apply_timeout_secs: u64,
    /// Largest output stored per command (KiB); more is a warning and nothing is stored for it.
    pub max_output_kb: u64,
    /// Commands by name (`brew = ["brew", "list", "--versions"]`); replaces the defaults when set.
    pub commands: Option<BTreeMap<String, Vec<String>>>,
    /// Only these captures run (names of `commands` or of the defaults);
    /// `None`: all. `BACKUP_PACKAGES=apt,npm` sets it.
    pub managers: Option<Vec<String>>,
    /// Reuse a capture while what its manager changes when packages change
    /// is unchanged (`<repo>/cache/packages`, docs/cli.md#package-lists).
    pub cache: bool,
    /// Paths whose change means a capture must run again, by capture name;
    /// replaces the built-in rule (and makes a configured command cacheable).
    /// `~` is expanded when the settings are resolved.
    pub watch: Option<BTreeMap<String, Vec<String>>>,
}

impl Default for PackagesSection {
    fn default() -> Self {
        PackagesSection {
            auto: true,
            manual: false,
            timeout_secs: 10,
            apply_timeout_secs: 900,
            max_output_kb: 1024,
            commands: None,
            managers: None,
            cache: true,
            watch: None,
        }
    }
}

/// `[health]`: thresholds of `backup-checkpoint --health-check` (`src/ops/health.rs`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// A phase's newest checkpoint older than this many days is yellow.
    pub max_checkpoint_age_days: u64,
    /// No successful `backup-verify` within this many days is yellow.
    pub max_verify_age_days: u64,
    /// Repositories up to this size (MiB) are re-hashed in full by the check itself.
    pub quick_verify_max_mb: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            max_checkpoint_age_days: 30,
            max_verify_age_days: 30,
            quick_verify_max_mb: 256,
        }
    }
}

/// `[external]` as written in the file; see [`ExternalSettings`] for the resolved form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalSection {
    targets: Option<BTreeMap<String, String>>,
    auto_sync: Option<bool>,
    timeout_secs: Option<u64>,
    cache_dir: Option<String>,
}

/// `[retry]` as written in the file; see [`crate::retry::RetryPolicy`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySection {
    attempts: Option<u32>,
    base_delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
}

/// Default per-call time limit of an `rclone` call, in seconds.
pub const DEFAULT_EXTERNAL_TIMEOUT_SECS: u64 = 600;
/// Default cache of copies fetched from rclone targets (`backup-list --external`).
pub const DEFAULT_EXTERNAL_CACHE: &str = "~/.cache/dotfiles-backup/external";

/// Where an external copy lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLocation {
    /// A directory: an external drive or a network mount (absolute).
    Dir(PathBuf),
    /// An rclone remote and path, as rclone spells it (`gdrive:backups/dotfiles`).
    Rclone(String),
}

impl TargetLocation {
    /// Parse `rclone:REMOTE:PATH` or a directory path (absolute or `~/...`).
    pub fn parse(raw: &str, home: Option<&Path>) -> std::result::Result<TargetLocation, String> {
        if let Some(rest) = raw.strip_prefix("rclone:") {
            let Some((remote, _)) = rest.split_once(':') else {
                return Err(format!("{raw:?} is not `rclone:REMOTE:PATH` (the remote name needs its colon, e.g. rclone:gdrive:backups)"));
            };
            if remote.is_empty() || remote.contains('/') {
                return Err(format!("{raw:?} names no rclone remote before the colon"));
            }
            return Ok(TargetLocation::Rclone(rest.to_string()));
        }
        let expanded = expand_tilde(Path::new(raw), home)
            .ok_or_else(|| format!("{raw:?} starts with `~` but $HOME is not set"))?;
        if !expanded.is_absolute() {
            return Err(format!("{raw:?} is not an absolute directory (write /Volumes/Backup/dotfiles-backups, ~/mnt/nas/backups or rclone:REMOTE:PATH)"));
        }
        let dir = normalize_lexically(&expanded);
        if dir.parent().is_none() {
            return Err(format!("{raw:?}: the root directory cannot be a target"));
        }
        Ok(TargetLocation::Dir(dir))
    }

    /// As written in messages: the directory (`~`-relative) or `rclone:REMOTE:PATH`.
    pub fn shown(&self) -> String {
        match self {
            TargetLocation::Dir(p) => display_path(p),
            TargetLocation::Rclone(r) => format!("rclone:{r}"),
        }
    }
}

/// One configured external target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTarget {
    /// Name (`[external.targets]` key), used by `--external=NAME`.
    pub name: String,
    /// Where it is.
    pub location: TargetLocation,
}

/// External copies of the repository (see `docs/config.md`, `src/ops/sync.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSettings {
    /// Targets, sorted by name; empty means none is configured.
    pub targets: Vec<ExternalTarget>,
    /// Sync after every checkpoint and backup.
    pub auto_sync: bool,
    /// Time limit of one rclone call.
    pub timeout: Duration,
    /// Where copies fetched from rclone targets are kept.
    pub cache_dir: Option<PathBuf>,
}

/// `[secrets]` as written in the file; see [`SecretSettings`] for the resolved form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsSection {
    recipients: Option<Vec<String>>,
    recipients_file: Option<String>,
    identity_file: Option<String>,
}

/// Default file of age recipients (one public key per line), read when it exists.
pub const DEFAULT_RECIPIENTS_FILE: &str = "~/.config/dotfiles-backup/recipients.txt";
/// Default age identity file (the private key), needed only to restore secrets.
pub const DEFAULT_IDENTITY_FILE: &str = "~/.config/dotfiles-backup/identity.txt";
/// Where the plaintext secret-id keys live: outside the repository, so a copy of
/// the repository (an external drive, a cloud remote) never carries them.
pub const DEFAULT_KEY_DIR: &str = "~/.local/state/dotfiles-backup/keys";

/// How secret-class files are handled: encrypted to `recipients`, or skipped
/// when there are none. See `src/secrets.rs` and `docs/secrets.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSettings {
    /// age recipients (`age1…`), validated; empty means secrets are skipped.
    pub recipients: Vec<String>,
    /// The recipients file that was read or would be read (also where `--init-secrets` writes).
    pub recipients_file: Option<PathBuf>,
    /// Identity file for decryption (may not exist).
    pub identity_file: Option<PathBuf>,
    /// Directory of plaintext secret-id keys (outside the repository).
    pub key_dir: Option<PathBuf>,
}

/// `[space]`: the free-space guard and the repository quota (sizes in MiB).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SpaceSection {
    /// Warn when free space is below this.
    pub warn_below_mb: u64,
    /// Warn more strongly below this.
    pub strong_warn_below_mb: u64,
    /// Refuse to write below this (or when the estimated new data does not fit).
    pub refuse_below_mb: u64,
    /// Largest repository size; 0 means no quota.
    pub max_repo_mb: u64,
    /// Warn about single files at least this large (size report).
    pub large_file_warn_mb: u64,
    /// Warn strongly about files at least this large.
    pub large_file_strong_mb: u64,
}

impl Default for SpaceSection {
    fn default() -> Self {
        SpaceSection {
            warn_below_mb: 1024,
            strong_warn_below_mb: 500,
            refuse_below_mb: 100,
            max_repo_mb: 0,
            large_file_warn_mb: 10,
            large_file_strong_mb: 100,
        }
    }
}

/// `[retention]`: what `backup-prune` keeps. See `docs/retention.md`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Backups: always keep the newest N.
    pub keep_last: usize,
    /// Backups: newest in each of the last N days that have one.
    pub keep_daily: usize,
    /// Backups: newest in each of the last N ISO weeks that have one.
    pub keep_weekly: usize,
    /// Backups: newest in each of the last N months that have one.
    pub keep_monthly: usize,
    /// Backups: newest in each of the last N years that have one.
    pub keep_yearly: usize,
    /// Phase checkpoints: newest N per phase.
    pub keep_per_phase: usize,
    /// Manual checkpoints: removed only when older than this many days (0: never).
    pub manual_max_age_days: u64,
    /// Repack a pack when more than this percent of its bytes are garbage.
    pub repack_garbage_percent: u8,
    /// Prune checkpoints and safety snapshots by this policy after each successful write.
    pub auto: bool,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_yearly: 3,
            keep_per_phase: 3,
            manual_max_age_days: 0,
            repack_garbage_percent: 50,
            auto: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneralSection {
    disabled: Option<bool>,
    local_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositorySection {
    path: Option<String>,
    lock_wait_secs: Option<f64>,
    verify_after_write: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackSection {
    config: Option<Vec<String>>,
    data: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    extra_exclude: Option<Vec<String>>,
    ignore_file: Option<String>,
    exclude_caches: Option<bool>,
    max_file_size: Option<u64>,
    follow_links_into: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassesSection {
    secret: Option<Vec<String>>,
    private: Option<Vec<String>>,
    public: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SafetySection {
    keep: Option<usize>,
}

/// What the command line says, before merging.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--repo`.
    pub repo: Option<PathBuf>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--path` (replaces the tracked set when non-empty).
    pub paths: Vec<PathBuf>,
    /// `--wait`.
    pub wait_secs: Option<f64>,
    /// `--config-only`.
    pub config_only: bool,
    /// `--exclude` patterns added for this run.
    pub excludes: Vec<String>,
    /// `--sizes`: report large files even when not a dry run.
    pub sizes: bool,
    /// `--retries`: attempts for transient failures.
    pub retries: Option<u32>,
    /// `--verify-after-write BOOL`.
    pub verify_after_write: Option<bool>,
}

/// A tracked root: as configured (`~/.zshrc`) and resolved (`/home/u/.zshrc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedRoot {
    /// `~`-relative form when under `$HOME`, else absolute.
    pub shown: PathBuf,
    /// Absolute path on this machine.
    pub abs: PathBuf,
}

/// The resolved settings every operation uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `$HOME`, if set.
    pub home: Option<PathBuf>,
    /// Repository root (absolute).
    pub repo: PathBuf,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Roots to track in this run.
    pub roots: Vec<TrackedRoot>,
    /// Gitignore-style exclude patterns (relative to `$HOME`).
    pub excludes: Vec<String>,
    /// Ignore file to read (may not exist).
    pub ignore_file: Option<PathBuf>,
    /// Skip directories holding a valid `CACHEDIR.TAG`.
    pub exclude_caches: bool,
    /// Outside `$HOME`, a tracked symlink's target is tracked too only when
    /// it is beneath one of these (`track.follow_links_into`); inside
    /// `$HOME` always.
    pub follow_links_into: Vec<PathBuf>,
    /// Larger files are skipped with a warning.
    pub max_file_size: u64,
    /// Class patterns.
    pub secret_patterns: Vec<String>,
    /// Class patterns.
    pub private_patterns: Vec<String>,
    /// Class patterns.
    pub public_patterns: Vec<String>,
    /// Safety snapshots kept.
    pub safety_keep: usize,
    /// Retention policy for prune.
    pub retention: RetentionSection,
    /// Free-space guard and quota.
    pub space: SpaceSection,
    /// Report per-root sizes and large files (`--sizes`, and every dry run).
    pub report_sizes: bool,
    /// `BACKUP_DISABLED` or config.
    pub disabled: bool,
    /// `BACKUP_LOCAL_ONLY` or config.
    pub local_only: bool,
    /// How long a writer waits for the lock.
    pub lock_wait: Duration,
    /// Read back every pack a run wrote and check its hash before the
    /// record is committed (`[repository] verify_after_write`,
    /// `BACKUP_VERIFY_AFTER_WRITE`, `--verify-after-write`).
    pub verify_after_write: bool,
    /// Encryption of secret-class files.
    pub secrets: SecretSettings,
    /// External copies (`[external]`, `BACKUP_EXTERNAL`).
    pub external: ExternalSettings,
    /// Retries of transient failures (`[retry]`, `BACKUP_RETRIES`, `--retries`).
    pub retry: crate::retry::RetryPolicy,
    /// Package-list captures (`[packages]`, `BACKUP_PACKAGES` overrides `auto` and `manual`).
    pub packages: PackagesSection,
    /// Health-check thresholds.
    pub health: HealthSection,
    /// Commands run when a writer command ends.
    pub hooks: HooksSection,
    /// Where each setting came from, when it was a flag, the environment
    /// or another file (see `effective_config` for every key's source).
    pub sources: BTreeMap<&'static str, String>,
    /// Every `section.key` the config file set.
    pub file_keys: BTreeSet<String>,
    /// `[track]` lists as they apply to this run, before merging into roots and excludes.
    pub track_lists: TrackLists,
}

/// The `[track]` lists as they apply (defaults filled in, flags added), for
/// `--print-config`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrackLists {
    /// `track.config` (or `--path`).
    pub config: Vec<String>,
    /// `track.data` (empty with `--config-only`).
    pub data: Vec<String>,
    /// `track.exclude` (or the default excludes).
    pub exclude: Vec<String>,
    /// `track.extra_exclude` plus `--exclude`.
    pub extra_exclude: Vec<String>,
}

/// Every key the config file accepts (`section.key`), read from the serde
/// definitions themselves: a probe key is deserialized into each section
/// and serde's `unknown field` error lists the fields it expected. A new
/// key is in this list the moment it is in the code (docs test, `--print-config`).
pub fn known_keys() -> Vec<String> {
    fn expected(doc: &str) -> Vec<String> {
        match toml::from_str::<FileConfig>(doc) {
            Ok(_) => Vec::new(),
            // "unknown field `__probe__`, expected one of `a`, `b`": every
            // other backticked word after the probe's own.
            Err(e) => e
                .message()
                .split('`')
                .skip(3)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        }
    }
    let mut keys = Vec::new();
    for section in expected("__probe__ = 1") {
        for key in expected(&format!("[{section}]\n__probe__ = 1")) {
            keys.push(format!("{section}.{key}"));
        }
    }
    keys
}

/// The `section.key` names a config file's text sets (two levels: a table
/// under a section, such as `[external.targets]`, is one key).
fn keys_set_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        for (section, value) in &table {
            if let Some(t) = value.as_table() {
                out.extend(t.keys().map(|k| format!("{section}.{k}")));
            }
        }
    }
    out
}

/// Read environment variables through a function so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Variables whose values are paths or settings: one that is set but not
/// UTF-8 would read as unset through [`process_env`] (and, for
/// `BACKUP_REPO`, silently select the default repository), so it is refused.
pub fn check_env_utf8() -> Result<()> {
    let keys = std::env::vars_os().filter_map(|(k, v)| {
        let k = k.to_str()?.to_string();
        (v.to_str().is_none() && (k == "HOME" || k.starts_with("BACKUP_") || k.starts_with("XDG_")))
            .then_some(k)
    });
    if let Some(key) = keys.min() {
        return Err(Error::usage(
            "bad_environment",
            format!("${key} is not valid UTF-8; dotfiles-backup reads it as text"),
        )
        .with_hint(format!(
            "set {key} to a UTF-8 path (a symlink with a UTF-8 name to the directory works)"
        )));
    }
    Ok(())
}

/// `BACKUP_PACKAGES`: a boolean, or a comma-separated list of capture names
/// (captures on, limited to those).
fn parse_packages_switch(value: &str) -> Result<(bool, Option<Vec<String>>)> {
    if let Ok(on) = parse_bool("BACKUP_PACKAGES", value) {
        return Ok((on, None));
    }
    let names: Vec<String> = value
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().any(|n| {
        !n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }) {
        return Err(Error::usage(
            "bad_environment",
            format!(
                "BACKUP_PACKAGES={value:?} is neither a boolean nor a list of package managers"
            ),
        )
        .with_hint("set BACKUP_PACKAGES to true, false, or names such as apt,brew,npm"));
    }
    Ok((true, Some(names)))
}

/// Every name in `packages.managers` must be a capture that exists.
fn check_managers(packages: &PackagesSection, file_src: &str) -> Result<()> {
    let known: Vec<String> = match &packages.commands {
        Some(map) => map.keys().cloned().collect(),
        None => DEFAULT_PACKAGE_CAPTURES
            .iter()
            .map(|n| n.to_string())
            .collect(),
    };
    for name in packages.managers.iter().flatten() {
        if !known.contains(name) {
            return Err(Error::usage(
                "bad_config",
                format!(
                    "{file_src}: packages.managers (or BACKUP_PACKAGES) names `{name}`, which is not a package capture"
                ),
            )
            .with_hint(format!("choose from: {}", known.join(", "))));
        }
    }
    Ok(())
}

fn parse_bool(var: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(Error::usage(
            "bad_environment",
            format!("{var}={other:?} is not a boolean"),
        )
        .with_hint(format!("set {var} to true or false"))),
    }
}

/// `$HOME` as one spelling per directory: `/home/u/`, `/home//u` and a
/// symlink to `/home/u` are the same home, whose records, labels and undo
/// chain must be found whichever way it was written. The resolved path when
/// it exists; otherwise the path with `//`, `.` and a trailing `/` removed.
fn one_spelling_of_home(home: &Path) -> PathBuf {
    std::fs::canonicalize(home).unwrap_or_else(|_| home.components().collect())
}

impl Settings {
    /// Merge defaults, the config file, the environment and the flags.
    pub fn resolve(over: &Overrides, env: EnvLookup<'_>) -> Result<Settings> {
        let home = env("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|p| one_spelling_of_home(&p));
        let mut sources = BTreeMap::new();
        let expand = |p: &str, what: &str| -> Result<PathBuf> {
            if p.contains('\0') {
                // No file name can hold NUL; catch it here, not as a per-path I/O error.
                return Err(Error::usage(
                    "bad_config",
                    format!("{what} {p:?} contains a NUL byte"),
                )
                .with_hint("remove the NUL (\\u0000) from the path"));
            }
            let expanded = expand_tilde(Path::new(p), home.as_deref()).ok_or_else(|| {
                Error::usage(
                    "home_not_set",
                    format!("{what} `{p}` starts with `~` but $HOME is not set"),
                )
                .with_hint("set HOME, or use absolute paths")
            })?;
            Ok(absolutize(&expanded))
        };

        // Which config file, and is it required to exist?
        let (config_path, explicit) = if let Some(p) = &over.config {
            (Some(absolutize(p)), true)
        } else if let Some(p) = env("BACKUP_CONFIG").filter(|s| !s.is_empty()) {
            (Some(expand(&p, "BACKUP_CONFIG")?), true)
        } else {
            (
                expand_tilde(Path::new(DEFAULT_CONFIG), home.as_deref()),
                false,
            )
        };
        let (file, config_file, file_keys) = match &config_path {
            Some(path) => read_config_file(path, explicit)?,
            None => (FileConfig::default(), None, BTreeSet::new()),
        };
        let file_src = || {
            config_file
                .as_ref()
                .map(|p| format!("config {}", display_path(p)))
                .unwrap_or_default()
        };

        // Repository.
        let repo = if let Some(r) = &over.repo {
            sources.insert("repository.path", "flag --repo".into());
            absolutize(r)
        } else if let Some(r) = env("BACKUP_REPO").filter(|s| !s.is_empty()) {
            sources.insert("repository.path", "env BACKUP_REPO".into());
            expand(&r, "BACKUP_REPO")?
        } else if let Some(r) = &file.repository.path {
            sources.insert("repository.path", file_src());
            expand(r, "repository.path")?
        } else {
            sources.insert("repository.path", "default".into());
            expand(DEFAULT_REPO, "the default repository")?
        };

        let (roots, mut track_lists) = resolve_roots(
            over,
            &file.track,
            home.as_deref(),
            &expand,
            &mut sources,
            &file_src(),
        )?;

        let mut excludes: Vec<String> = match &file.track.exclude {
            Some(e) => e.clone(),
            None => DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
        };
        track_lists.exclude = excludes.clone();
        track_lists.extra_exclude = file.track.extra_exclude.clone().unwrap_or_default();
        track_lists
            .extra_exclude
            .extend(over.excludes.iter().cloned());
        if !over.excludes.is_empty() {
            sources.insert("track.extra_exclude", "flag --exclude".into());
        }
        excludes.extend(track_lists.extra_exclude.iter().cloned());
        let ignore_file = match &file.track.ignore_file {
            Some(p) => Some(expand(p, "track.ignore_file")?),
            None => expand_tilde(Path::new(DEFAULT_IGNORE_FILE), home.as_deref()),
        };

        let mut follow_links_into = Vec::new();
        for p in file.track.follow_links_into.iter().flatten() {
            follow_links_into.push(expand(p, "track.follow_links_into")?);
        }
        let pick = |v: &Option<Vec<String>>, d: &[&str]| -> Vec<String> {
            v.clone()
                .unwrap_or_else(|| d.iter().map(|s| s.to_string()).collect())
        };
        for (key, list) in [
            ("classes.secret", &file.classes.secret),
            ("classes.private", &file.classes.private),
            ("classes.public", &file.classes.public),
        ] {
            for pat in list.iter().flatten() {
                globset::Glob::new(pat).map_err(|e| {
                    Error::usage(
                        "bad_config",
                        format!("{key}: pattern {pat:?} is invalid: {e}"),
                    )
                })?;
            }
        }

        let disabled = match env("BACKUP_DISABLED") {
            Some(v) => {
                sources.insert("general.disabled", "env BACKUP_DISABLED".into());
                parse_bool("BACKUP_DISABLED", &v)?
            }
            None => file.general.disabled.unwrap_or(false),
        };
        let local_only = match env("BACKUP_LOCAL_ONLY") {
            Some(v) => {
                sources.insert("general.local_only", "env BACKUP_LOCAL_ONLY".into());
                parse_bool("BACKUP_LOCAL_ONLY", &v)?
            }
            None => file.general.local_only.unwrap_or(false),
        };
        let wait = if let Some(w) = over.wait_secs {
            sources.insert("repository.lock_wait_secs", "flag --wait".into());
            w
        } else if let Some(w) = env("BACKUP_LOCK_WAIT") {
            sources.insert("repository.lock_wait_secs", "env BACKUP_LOCK_WAIT".into());
            w.parse::<f64>().map_err(|_| {
                Error::usage(
                    "bad_environment",
                    format!("BACKUP_LOCK_WAIT={w:?} is not a number of seconds"),
                )
            })?
        } else {
            file.repository.lock_wait_secs.unwrap_or(5.0)
        };
        let verify_after_write = if let Some(v) = over.verify_after_write {
            sources.insert(
                "repository.verify_after_write",
                "flag --verify-after-write".into(),
            );
            v
        } else if let Some(v) = env("BACKUP_VERIFY_AFTER_WRITE") {
            sources.insert(
                "repository.verify_after_write",
                "env BACKUP_VERIFY_AFTER_WRITE".into(),
            );
            parse_bool("BACKUP_VERIFY_AFTER_WRITE", &v)?
        } else {
            file.repository
                .verify_after_write
                .unwrap_or(DEFAULT_VERIFY_AFTER_WRITE)
        };
        if !(0.0..=86400.0).contains(&wait) {
            return Err(Error::usage(
                "bad_config",
                format!("lock wait {wait} s is out of range (0 to 86400)"),
            ));
        }
        if file.safety.keep == Some(0) {
            return Err(Error::usage(
                "bad_config",
                format!("{}: safety.keep must be at least 1", file_src()),
            ));
        }
        let secrets = resolve_secrets(&file.secrets, env, &expand, &mut sources, &file_src())?;
        let external = resolve_external(
            &file.external,
            env,
            home.as_deref(),
            &expand,
            &mut sources,
            &file_src(),
        )?;
        let retry = resolve_retry(&file.retry, over, env, &mut sources, &file_src())?;
        let packages = resolve_packages(&file.packages, env, &expand, &mut sources, &file_src())?;
        check_hooks(&file.hooks, &file_src())?;
        if packages.timeout_secs == 0 || packages.apply_timeout_secs == 0 {
            return Err(Error::usage(
                "bad_config",
                format!(
                    "{}: packages.timeout_secs and packages.apply_timeout_secs must be at least 1",
                    file_src()
                ),
            ));
        }
        Ok(Settings {
            home,
            repo,
            config_file,
            roots,
            excludes,
            ignore_file,
            exclude_caches: file.track.exclude_caches.unwrap_or(true),
            follow_links_into,
            max_file_size: file.track.max_file_size.unwrap_or(DEFAULT_MAX_FILE_SIZE),
            secret_patterns: pick(&file.classes.secret, DEFAULT_SECRET_PATTERNS),
            private_patterns: pick(&file.classes.private, DEFAULT_PRIVATE_PATTERNS),
            public_patterns: pick(&file.classes.public, DEFAULT_PUBLIC_PATTERNS),
            safety_keep: file.safety.keep.unwrap_or(5),
            retention: file.retention.clone(),
            space: file.space.clone(),
            report_sizes: over.sizes,
            disabled,
            local_only,
            lock_wait: Duration::from_secs_f64(wait),
            verify_after_write,
            secrets,
            external,
            retry,
            packages,
            health: file.health.clone(),
            hooks: file.hooks.clone(),
            sources,
            file_keys,
            track_lists,
        })
    }
}

/// An empty hook command or a time limit outside 1..=3600 s is a usage error.
fn check_hooks(hooks: &HooksSection, file_src: &str) -> Result<()> {
    for (key, hook) in [
        ("hooks.on_success", &hooks.on_success),
        ("hooks.on_partial", &hooks.on_partial),
        ("hooks.on_failure", &hooks.on_failure),
    ] {
        let empty = match hook {
            Some(HookCommand::Argv(a)) => a.first().is_none_or(|p| p.is_empty()),
            Some(HookCommand::Shell(s)) => s.trim().is_empty(),
            None => false,
        };
        if empty {
            return Err(Error::usage(
                "bad_config",
                format!("{file_src}: {key} is empty; give a program and its arguments or a shell command"),
            )
            .with_hint(format!("e.g. {key} = [\"notify-send\", \"dotfiles-backup\"] (docs/config.md#hooks)")));
        }
    }
    if !(1..=3600).contains(&hooks.timeout_secs) {
        return Err(Error::usage(
            "bad_config",
            format!(
                "{file_src}: hooks.timeout_secs = {} is out of range (1 to 3600)",
                hooks.timeout_secs
            ),
        ));
    }
    Ok(())
}

/// `[external]` + `BACKUP_EXTERNAL` (comma-separated `NAME=LOCATION` or
/// `LOCATION`; it replaces the configured targets, and an empty value means none).
fn resolve_external(
    section: &ExternalSection,
    env: EnvLookup<'_>,
    home: Option<&Path>,
    expand: &dyn Fn(&str, &str) -> Result<PathBuf>,
    sources: &mut BTreeMap<&'static str, String>,
    file_src: &str,
) -> Result<ExternalSettings> {
    let mut raw: Vec<(String, String, String)> = Vec::new();
    if let Some(list) = env("BACKUP_EXTERNAL") {
        sources.insert("external.targets", "env BACKUP_EXTERNAL".into());
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for (i, item) in items.iter().enumerate() {
            let (name, loc) = match item.split_once('=') {
                Some((n, l)) if !n.contains(['/', ':']) => {
                    (n.trim().to_string(), l.trim().to_string())
                }
                _ if items.len() == 1 => ("external".to_string(), item.to_string()),
                _ => (format!("external{}", i + 1), item.to_string()),
            };
            raw.push((name, loc, "BACKUP_EXTERNAL".into()));
        }
    } else if let Some(targets) = &section.targets {
        sources.insert("external.targets", file_src.to_string());
        for (name, loc) in targets {
            raw.push((
                name.clone(),
                loc.clone(),
                format!("{file_src}: external.targets.{name}"),
            ));
        }
    }
    let mut targets: Vec<ExternalTarget> = Vec::new();
    for (name, loc, origin) in raw {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(Error::usage(
                "bad_config",
                format!("{origin}: target name {name:?} must be letters, digits, `.`, `_` or `-`"),
            )
            .with_hint(
                "name targets like drive, nas or cloud (see docs/config.md, [external.targets])",
            ));
        }
        if targets.iter().any(|t| t.name == name) {
            return Err(Error::usage(
                "bad_config",
                format!("{origin}: target name {name:?} is used twice"),
            ));
        }
        let location = TargetLocation::parse(&loc, home).map_err(|why| {
            Error::usage("bad_config", format!("{origin}: {why}")).with_hint(
                "a target is an absolute directory or rclone:REMOTE:PATH (see docs/config.md)",
            )
        })?;
        targets.push(ExternalTarget { name, location });
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    let timeout = section
        .timeout_secs
        .unwrap_or(DEFAULT_EXTERNAL_TIMEOUT_SECS);
    if timeout == 0 {
        return Err(Error::usage(
            "bad_config",
            format!("{file_src}: external.timeout_secs must be at least 1"),
        ));
    }
    let cache_dir = match &section.cache_dir {
        Some(p) => Some(expand(p, "external.cache_dir")?),
        None => match env("XDG_CACHE_HOME").filter(|s| s.starts_with('/')) {
            Some(x) => Some(PathBuf::from(x).join("dotfiles-backup/external")),
            None => expand(DEFAULT_EXTERNAL_CACHE, "the external cache").ok(),
        },
    };
    Ok(ExternalSettings {
        targets,
        auto_sync: section.auto_sync.unwrap_or(true),
        timeout: Duration::from_secs(timeout),
        cache_dir,
    })
}

/// Read and parse the config file at `path`: the settings, the path (none
/// when a default path that cannot exist is treated as no file), and the
/// keys it sets (for `--print-config`). `explicit`: named by `--config` or
/// `BACKUP_CONFIG`, so it must exist.
fn read_config_file(
    path: &Path,
    explicit: bool,
) -> Result<(FileConfig, Option<PathBuf>, BTreeSet<String>)> {
    let mut file = FileConfig::default();
    let mut config_file = None;
    let mut file_keys = BTreeSet::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            file = toml::from_str(&text).map_err(|e| {
                Error::usage(
                    "bad_config",
                    format!("{}: {}", display_path(path), e.message()),
                )
                .with_path(path)
                .with_hint(match e.span() {
                    // Removed in 0.x: the health check follows `[space]` now.
                    _ if e.message().contains("`warn_free_mb`")
                        || e.message().contains("`min_free_mb`") =>
                    {
                        format!(
                            "health.warn_free_mb and health.min_free_mb are gone: the disk_space row follows space.warn_below_mb and space.refuse_below_mb; move the values there in {}",
                            display_path(path)
                        )
                    }
                    Some(span) => format!(
                        "fix line {} of {} (see docs/config.md for every key)",
                        text[..span.start.min(text.len())].lines().count().max(1),
                        display_path(path)
                    ),
                    None => "see docs/config.md for every key".to_string(),
                })
            })?;
            config_file = Some(path.to_path_buf());
            file_keys = keys_set_in(&text);
        }
        // A default path that cannot exist: `~/.config` is a file, or a
        // symlink (GNU Stow) whose target is one or is gone. Treated as
        // no config file, so that a rollback can still repair it.
        Err(e)
            if !explicit
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
        // A file the user named and that is not there is a mistake in
        // the arguments (exit 2), like any other bad configuration.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(Error::usage(
                "config_not_found",
                format!("the config file {} does not exist", display_path(path)),
            )
            .with_path(path)
            .with_hint(
                "pass an existing file with --config (or BACKUP_CONFIG), or unset it to use the defaults",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Error::usage(
                "bad_config",
                format!("{} is not valid UTF-8 (TOML must be)", display_path(path)),
            )
            .with_path(path)
            .with_hint("save the file as UTF-8; non-UTF-8 paths cannot be written in TOML, use a parent directory instead"))
        }
        Err(e) => return Err(Error::io("reading config", path, &e).with_hint(
            "pass an existing file with --config, or remove the option to use the defaults",
        )),
    }
    Ok((file, config_file, file_keys))
}

/// The tracked roots (`--path`, else `track.config` plus `track.data`
/// unless `--config-only`), expanded and absolute, duplicates and roots
/// inside another root dropped; with the lists as configured.
fn resolve_roots(
    over: &Overrides,
    track: &TrackSection,
    home: Option<&Path>,
    expand: &dyn Fn(&str, &str) -> Result<PathBuf>,
    sources: &mut BTreeMap<&'static str, String>,
    file_src: &str,
) -> Result<(Vec<TrackedRoot>, TrackLists)> {
    let mut track_lists = TrackLists::default();
    let configured: Vec<String> = if !over.paths.is_empty() {
        sources.insert("track", "flag --path".into());
        over.paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    } else {
        let mut list: Vec<String> = match &track.config {
            Some(c) => {
                sources.insert("track", file_src.to_string());
                c.clone()
            }
            None => {
                sources.insert("track", "default".into());
                DEFAULT_CONFIG_ROOTS.iter().map(|s| s.to_string()).collect()
            }
        };
        track_lists.config = list.clone();
        if !over.config_only {
            track_lists.data = track.data.clone().unwrap_or_default();
            list.extend(track_lists.data.iter().cloned());
        } else {
            sources.insert("track.data", "flag --config-only".into());
        }
        list
    };
    if !over.paths.is_empty() {
        track_lists.config = configured.clone();
    }
    let mut roots: Vec<TrackedRoot> = Vec::new();
    for (i, raw) in configured.iter().enumerate() {
        if raw.is_empty() {
            return Err(Error::usage(
                "bad_config",
                format!("tracked path #{} is empty", i + 1),
            ));
        }
        // --path values keep their bytes; the OsStr round trip above is lossy only for display.
        let abs = if !over.paths.is_empty() {
            let p = &over.paths[i];
            let expanded = expand_tilde(p, home).ok_or_else(|| {
                Error::usage(
                    "home_not_set",
                    format!("--path {} needs $HOME", p.display()),
                )
            })?;
            absolutize(&expanded)
        } else {
            // Name the file and the key: the user must find the bad entry.
            expand(raw, &format!("{}: track.config/track.data entry", file_src))?
        };
        if abs.parent().is_none() {
            return Err(Error::usage(
                "bad_path",
                "tracking `/` is not supported; name the directories to track",
            ));
        }
        let shown = crate::paths::tilde_form(&abs, home);
        if !roots.iter().any(|r| r.abs == abs) {
            roots.push(TrackedRoot { shown, abs });
        }
    }
    // A root inside another root would be stored twice and restored in a
    // confusing order; keep the outer one.
    let all: Vec<PathBuf> = roots.iter().map(|r| r.abs.clone()).collect();
    roots.retain(|r| !all.iter().any(|o| o != &r.abs && r.abs.starts_with(o)));
    Ok((roots, track_lists))
}

/// `[packages]` + `BACKUP_PACKAGES` / `BACKUP_PACKAGES_TIMEOUT`: the
/// switches, the managers named, watched paths expanded, commands checked.
fn resolve_packages(
    section: &PackagesSection,
    env: EnvLookup<'_>,
    expand: &dyn Fn(&str, &str) -> Result<PathBuf>,
    sources: &mut BTreeMap<&'static str, String>,
    file_src: &str,
) -> Result<PackagesSection> {
    let mut packages = section.clone();
    if let Some(v) = env("BACKUP_PACKAGES") {
        sources.insert("packages", "env BACKUP_PACKAGES".into());
        let (on, managers) = parse_packages_switch(&v)?;
        packages.auto = on;
        packages.manual = on;
        if managers.is_some() {
            packages.managers = managers;
        }
    }
    if let Some(v) = env("BACKUP_PACKAGES_TIMEOUT") {
        sources.insert(
            "packages.timeout_secs",
            "env BACKUP_PACKAGES_TIMEOUT".into(),
        );
        packages.timeout_secs = v.trim().parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
            Error::usage(
                "bad_environment",
                format!("BACKUP_PACKAGES_TIMEOUT={v:?} is not a whole number of seconds (1 or more)"),
            )
            .with_hint("e.g. BACKUP_PACKAGES_TIMEOUT=30")
        })?;
    }
    check_managers(&packages, file_src)?;
    if let Some(watch) = packages.watch.as_mut() {
        for (name, paths) in watch.iter_mut() {
            for p in paths.iter_mut() {
                *p = expand(p, &format!("packages.watch.{name}"))?
                    .to_string_lossy()
                    .into_owned();
            }
        }
    }
    for (name, argv) in packages.commands.iter().flatten() {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::usage(
                "bad_config",
                format!(
                    "{}: packages.commands.{name} is empty; give the program and its arguments",
                    file_src
                ),
            )
            .with_hint(format!(
                "e.g. {name} = [\"brew\", \"list\", \"--versions\"]"
            )));
        }
    }
    Ok(packages)
}

/// `[retry]` + `BACKUP_RETRIES` / `BACKUP_RETRY_BASE_MS` + `--retries`.
fn resolve_retry(
    section: &RetrySection,
    over: &Overrides,
    env: EnvLookup<'_>,
    sources: &mut BTreeMap<&'static str, String>,
    file_src: &str,
) -> Result<crate::retry::RetryPolicy> {
    let number = |var: &str| -> Result<Option<u64>> {
        match env(var).filter(|s| !s.trim().is_empty()) {
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                Error::usage(
                    "bad_environment",
                    format!("{var}={v:?} is not a whole number"),
                )
                .with_hint(format!("set {var} to a number, or unset it"))
            }),
            None => Ok(None),
        }
    };
    let attempts = if let Some(n) = over.retries {
        sources.insert("retry.attempts", "flag --retries".into());
        u64::from(n)
    } else if let Some(n) = number("BACKUP_RETRIES")? {
        sources.insert("retry.attempts", "env BACKUP_RETRIES".into());
        n
    } else {
        u64::from(section.attempts.unwrap_or(crate::retry::DEFAULT_ATTEMPTS))
    };
    let base_ms = match number("BACKUP_RETRY_BASE_MS")? {
        Some(n) => {
            sources.insert("retry.base_delay_ms", "env BACKUP_RETRY_BASE_MS".into());
            n
        }
        None => section
            .base_delay_ms
            .unwrap_or(crate::retry::DEFAULT_BASE_DELAY.as_millis() as u64),
    };
    let max_ms = section
        .max_delay_ms
        .unwrap_or(crate::retry::DEFAULT_MAX_DELAY.as_millis() as u64)
        .max(base_ms);
    if !(1..=20).contains(&attempts) {
        return Err(Error::usage(
            "bad_config",
            format!("retry attempts {attempts} is out of range (1 to 20; 1 means no retry)"),
        )
        .with_hint(format!(
            "fix --retries, BACKUP_RETRIES or retry.attempts in {}",
            if file_src.is_empty() {
                "the config"
            } else {
                file_src
            }
        )));
    }
    if base_ms > 600_000 || max_ms > 3_600_000 {
        return Err(Error::usage(
            "bad_config",
            "retry delays are too long (base_delay_ms at most 600000, max_delay_ms at most 3600000)",
        ));
    }
    Ok(crate::retry::RetryPolicy {
        attempts: attempts as u32,
        base_delay: Duration::from_millis(base_ms),
        max_delay: Duration::from_millis(max_ms),
    })
}

/// `[secrets]` + `BACKUP_AGE_RECIPIENTS` / `BACKUP_AGE_IDENTITY`: recipients are
/// validated here so a typo fails every command at once, naming the key.
fn resolve_secrets(
    section: &SecretsSection,
    env: EnvLookup<'_>,
    expand: &dyn Fn(&str, &str) -> Result<PathBuf>,
    sources: &mut BTreeMap<&'static str, String>,
    file_src: &str,
) -> Result<SecretSettings> {
    let optional = |p: &str, what: &str| -> Result<Option<PathBuf>> {
        match expand(p, what) {
            Ok(path) => Ok(Some(path)),
            Err(e) if e.code == "home_not_set" => Ok(None),
            Err(e) => Err(e),
        }
    };
    let recipients_file = match &section.recipients_file {
        Some(p) => Some(expand(p, "secrets.recipients_file")?),
        None => optional(DEFAULT_RECIPIENTS_FILE, "the default recipients file")?,
    };
    let mut recipients: Vec<(String, String)> = Vec::new();
    if let Some(list) = env("BACKUP_AGE_RECIPIENTS").filter(|s| !s.trim().is_empty()) {
        sources.insert("secrets.recipients", "env BACKUP_AGE_RECIPIENTS".into());
        for r in list.split([',', ' ', '\n']).filter(|r| !r.is_empty()) {
            recipients.push((r.to_string(), "BACKUP_AGE_RECIPIENTS".into()));
        }
    } else {
        for r in section.recipients.iter().flatten() {
            sources.insert("secrets.recipients", file_src.to_string());
            recipients.push((r.clone(), format!("{file_src}: secrets.recipients")));
        }
        if let Some(path) = &recipients_file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        sources.insert("secrets.recipients", format!("file {}", display_path(path)));
                        recipients.push((line.to_string(), format!("{} line {}", display_path(path), n + 1)));
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) && section.recipients_file.is_none() => {}
                Err(e) => {
                    return Err(Error::io("reading recipients file", path, &e)
                        .with_hint("fix secrets.recipients_file in the config, or create the file with `backup-create --init-secrets`"))
                }
            }
        }
    }
    let mut valid: Vec<String> = Vec::new();
    for (r, origin) in recipients {
        if r.parse::<age::x25519::Recipient>().is_err() {
            return Err(Error::usage(
                "bad_config",
                format!("{origin}: {r:?} is not an age recipient (expected a public key starting with `age1`)"),
            )
            .with_hint("generate a key pair with `backup-create --init-secrets` (or `age-keygen`) and list its public key"));
        }
        if !valid.contains(&r) {
            valid.push(r);
        }
    }
    let identity_file = match env("BACKUP_AGE_IDENTITY").filter(|s| !s.is_empty()) {
        Some(p) => {
            sources.insert("secrets.identity_file", "env BACKUP_AGE_IDENTITY".into());
            Some(expand(&p, "BACKUP_AGE_IDENTITY")?)
        }
        None => match &section.identity_file {
            Some(p) => Some(expand(p, "secrets.identity_file")?),
            None => optional(DEFAULT_IDENTITY_FILE, "the default identity file")?,
        },
    };
    let key_dir = match env("BACKUP_KEY_DIR").filter(|s| !s.is_empty()) {
        Some(p) => Some(expand(&p, "BACKUP_KEY_DIR")?),
        None => optional(DEFAULT_KEY_DIR, "the secret-id key directory")?,
    };
    Ok(SecretSettings {
        recipients: valid,
        recipients_file,
        identity_file,
        key_dir,
    })
}

/// Make a path absolute against the current directory and normalize it lexically.
pub fn absolutize(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    normalize_lexically(&joined)
}

/// `$HOME` for callers outside config.
pub fn current_home() -> Option<PathBuf> {
    home_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// The keys docs/config.md documents: `key = ...` lines under a
    /// `[section]` header of its TOML examples (a `[section.sub]` header
    /// documents `section.sub`), or a `section.key` mention in backticks.
    fn documented_keys(doc: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut section = String::new();
        for line in doc.lines() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix('[') {
                if let Some((name, _)) = rest.split_once(']') {
                    section = name.to_string();
                    out.insert(name.to_string());
                    continue;
                }
            }
            if let Some((key, _)) = t.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    out.insert(format!("{section}.{key}"));
                }
            }
            for (i, word) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    out.insert(word.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn every_config_key_is_documented_in_docs_config_md() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md"))
                .unwrap();
        let documented = documented_keys(&doc);
        let keys = known_keys();
        assert!(keys.len() > 40, "{keys:?}");
        let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "docs/config.md does not document {missing:?} (add each under its [section] in a TOML example)"
        );
        // The check itself can fail.
        assert!(!documented_keys("[space]\nwarn_below_mb = 1\n").contains("space.max_repo_mb"));
    }

    #[test]
    fn defaults_resolve_against_home() {
        let env = env_of(&[("HOME", "/home/u")]);
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.repo, PathBuf::from("/home/u/.dotfiles-backups"));
        assert!(s.roots.iter().any(|r| r.shown == Path::new("~/.zshrc")));
        assert_eq!(s.sources["repository.path"], "default");
        assert!(!s.disabled);
    }

    #[test]
    fn precedence_flag_over_env_over_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("c.toml");
        std::fs::write(&cfg, "[repository]\npath = \"/from/file\"\n").unwrap();
        let c = cfg.to_str().unwrap();
        let env = env_of(&[("HOME", "/h"), ("BACKUP_CONFIG", c)]);
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.repo, PathBuf::from("/from/file"));
        let env = env_of(&[
            ("HOME", "/h"),
            ("BACKUP_CONFIG", c),
            ("BACKUP_REPO", "/from/env"),
        ]);
        let s = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(s.repo, PathBuf::from("/from/env"));
        let over = Overrides {
            repo: Some("/from/flag".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&over, &env).unwrap();
        assert_eq!(s.repo, PathBuf::from("/from/flag"));
        assert_eq!(s.sources["repository.path"], "flag --repo");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("c.toml");
        std::fs::write(&cfg, "[track]\nconfg = [\"~/.x\"]\n").unwrap();
        let over = Overrides {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let err = Settings::resolve(&over, &env_of(&[("HOME", "/h")])).unwrap_err();
        assert_eq!(err.code, "bad_config");
        assert!(err.message.contains("confg"), "{}", err.message);
        assert!(err.message.contains("c.toml"), "{}", err.message);
    }

    #[test]
    fn bad_bool_env_is_usage_error() {
        let err = Settings::resolve(
            &Overrides::default(),
            &env_of(&[("HOME", "/h"), ("BACKUP_DISABLED", "maybe")]),
        )
        .unwrap_err();
        assert_eq!(err.exit, crate::exit::ExitCode::Usage);
        assert!(err.message.contains("BACKUP_DISABLED"));
    }

    #[test]
    fn nested_roots_collapse_to_outer() {
        let over = Overrides {
            paths: vec![
                "~/.config".into(),
                "~/.config/nvim".into(),
                "~/.zshrc".into(),
            ],
            ..Default::default()
        };
        let s = Settings::resolve(&over, &env_of(&[("HOME", "/h")])).unwrap();
        let shown: Vec<_> = s.roots.iter().map(|r| r.shown.clone()).collect();
        assert_eq!(
            shown,
            vec![PathBuf::from("~/.config"), PathBuf::from("~/.zshrc")]
        );
    }

    #[test]
    fn missing_home_with_tilde_paths_is_clear() {
        let err = Settings::resolve(&Overrides::default(), &env_of(&[])).unwrap_err();
        assert_eq!(err.code, "home_not_set");
    }

    #[test]
    fn external_targets_from_file_and_env() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[external.targets]\nnas = \"rclone:nas:backups/dots\"\ndrive = \"~/mnt/drive/b\"\n[external]\ntimeout_secs = 9\n",
        )
        .unwrap();
        let over = Overrides {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&over, &env_of(&[("HOME", "/h")])).unwrap();
        let names: Vec<&str> = s.external.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["drive", "nas"]);
        assert_eq!(
            s.external.targets[0].location,
            TargetLocation::Dir(PathBuf::from("/h/mnt/drive/b"))
        );
        assert_eq!(
            s.external.targets[1].location,
            TargetLocation::Rclone("nas:backups/dots".into())
        );
        assert_eq!(s.external.timeout, Duration::from_secs(9));
        // The environment replaces the list; an empty value means none.
        let env = env_of(&[("HOME", "/h"), ("BACKUP_EXTERNAL", "/mnt/a, b=rclone:r:")]);
        let s = Settings::resolve(&over, &env).unwrap();
        let got: Vec<(String, String)> = s
            .external
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.location.shown()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b".to_string(), "rclone:r:".to_string()),
                ("external1".to_string(), "/mnt/a".to_string())
            ]
        );
        let s =
            Settings::resolve(&over, &env_of(&[("HOME", "/h"), ("BACKUP_EXTERNAL", "")])).unwrap();
        assert!(s.external.targets.is_empty());
    }

    #[test]
    fn bad_external_targets_and_retry_settings_are_usage_errors() {
        for bad in ["relative/dir", "rclone:noremote", "/", "x y=/mnt/a"] {
            let err = Settings::resolve(
                &Overrides::default(),
                &env_of(&[("HOME", "/h"), ("BACKUP_EXTERNAL", bad)]),
            )
            .unwrap_err();
            assert_eq!(err.code, "bad_config", "{bad}: {}", err.message);
            assert!(err.message.contains("BACKUP_EXTERNAL"), "{}", err.message);
        }
        let err = Settings::resolve(
            &Overrides::default(),
            &env_of(&[("HOME", "/h"), ("BACKUP_RETRIES", "many")]),
        )
        .unwrap_err();
        assert_eq!(err.code, "bad_environment");
        let over = Overrides {
            retries: Some(0),
            ..Default::default()
        };
        let err = Settings::resolve(&over, &env_of(&[("HOME", "/h")])).unwrap_err();
        assert_eq!(err.code, "bad_config");
        let over = Overrides {
            retries: Some(5),
            ..Default::default()
        };
        let s = Settings::resolve(
            &over,
            &env_of(&[
                ("HOME", "/h"),
                ("BACKUP_RETRIES", "2"),
                ("BACKUP_RETRY_BASE_MS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(s.retry.attempts, 5, "the flag wins over the environment");
        assert_eq!(s.retry.base_delay, Duration::from_millis(7));
        assert_eq!(s.sources["retry.attempts"], "flag --retries");
    }
}
