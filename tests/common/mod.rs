//! Shared helpers for the integration tests that drive the real binaries.
//!
//! * [`TestEnv`]: a throwaway `HOME` and repository path in a tempdir, and
//!   [`TestEnv::run`], which runs a `backup-*` binary with a clean environment
//!   (no `BACKUP_*` leaks from the caller), parses stdout as exactly one JSON
//!   envelope, validates it against `docs/schema/envelope.schema.json` and
//!   checks `exit_code` against the real process exit code. Every envelope
//!   any test produces through `run` is therefore schema-checked.
//! * [`assert_trees_equal`]: compares two directory trees entry by entry (type,
//!   bytes, mode, symlink target verbatim, mtime in ns), with names as raw
//!   bytes. Restore and rollback tests reuse it.
//! * [`build_odd_tree`]: a tree with every awkward thing a home directory can
//!   hold (empty and 5 MB files, odd modes, all kinds of symlinks, empty dirs,
//!   non-UTF-8 names, spaces and newlines in names), with fixed mtimes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Path of a binary built by this package.
pub fn exe(bin: &str) -> &'static str {
    match bin {
        "backup-checkpoint" => env!("CARGO_BIN_EXE_backup-checkpoint"),
        "backup-create" => env!("CARGO_BIN_EXE_backup-create"),
        "backup-list" => env!("CARGO_BIN_EXE_backup-list"),
        "backup-verify" => env!("CARGO_BIN_EXE_backup-verify"),
        "backup-restore" => env!("CARGO_BIN_EXE_backup-restore"),
        "backup-rollback" => env!("CARGO_BIN_EXE_backup-rollback"),
        "backup-prune" => env!("CARGO_BIN_EXE_backup-prune"),
        other => panic!("unknown binary {other}"),
    }
}

/// The envelope schema, compiled once per test binary.
pub fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(schema_path()).expect("schema file readable");
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    })
}

/// `docs/schema/envelope.schema.json`.
pub fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/envelope.schema.json")
}

/// Schema violations of `v`, empty when valid.
pub fn schema_errors(v: &Value) -> Vec<String> {
    schema()
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Panic unless `v` validates against the envelope schema.
pub fn assert_valid_envelope(v: &Value) {
    let errors = schema_errors(v);
    assert!(
        errors.is_empty(),
        "envelope violates docs/schema/envelope.schema.json: {errors:#?}\n{v:#}"
    );
}

/// True when running as root (where permission bits do not stop reads).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A test that cannot run on this machine: skipped with a note locally, a
/// failure in CI (`CI=true`) or when `REQUIRE` names `what` (comma-separated,
/// or `all`), so that CI can never be green without running it.
pub fn skip_unless_required(what: &str, reason: &str) {
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("REQUIRE")
            .is_ok_and(|v| v.split(',').any(|r| r.trim() == what || r.trim() == "all"));
    assert!(!required, "required test cannot run ({what}): {reason}");
    eprintln!("SKIPPED ({what}): {reason}");
}

/// The uid and gid of `nobody`: a named user in ACL fixtures, and the
/// fallback of [`unprivileged_id`] outside CI.
pub const NOBODY: u32 = 65534;

/// The unprivileged user `.ci/run` creates (idempotently) for the root-run
/// tests that need permission bits to stop a read or a write.
pub const TEST_USER: &str = "backup-test";

/// The id root-run tests drop to, as uid and as gid: [`TEST_USER`] when it
/// exists (`.ci/run` gives it one number for both, held by no other user or
/// group); otherwise `nobody`, unless `REQUIRE` names `nonroot` (or
/// `CI=true`), where a missing user is a failure, so CI proves the cases
/// run as the user it made.
pub fn unprivileged_id() -> u32 {
    static ID: OnceLock<u32> = OnceLock::new();
    *ID.get_or_init(|| {
        let name = std::ffi::CString::new(TEST_USER).unwrap();
        // SAFETY: getpwnam reads a NUL-terminated name; the result is checked
        // for NULL and copied out before any other passwd call.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            skip_unless_required(
                "nonroot",
                &format!("no user {TEST_USER} (.ci/run creates it); running as nobody"),
            );
            return NOBODY;
        }
        // SAFETY: non-NULL, as checked above.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        assert_ne!(uid, 0, "{TEST_USER} must not be root");
        assert_eq!(
            uid, gid,
            "{TEST_USER}'s uid and gid differ; recreate it as .ci/run does"
        );
        uid
    })
}

/// A throwaway home directory and repository path.
pub struct TestEnv {
    /// Owns everything; removed on drop.
    pub tmp: tempfile::TempDir,
    /// `$HOME` for the binaries.
    pub home: PathBuf,
    /// `BACKUP_REPO` for the binaries (not created until a writer runs).
    pub repo: PathBuf,
    /// When set, the binaries run as this uid/gid (through `setpriv`).
    pub run_as: Option<u32>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// An empty home and a repository path that does not exist yet.
    pub fn new() -> TestEnv {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        set_mode(&home, 0o755);
        let repo = tmp.path().join("repo");
        TestEnv {
            tmp,
            home,
            repo,
            run_as: None,
        }
    }

    /// Make the binaries run as an unprivileged user: as root, every file of
    /// the environment is handed to [`unprivileged_id`] and the binaries run
    /// as it through `setpriv`; as any other user, nothing changes (it
    /// already is one).
    pub fn unprivileged(mut self) -> TestEnv {
        if is_root() {
            let id = unprivileged_id();
            chown_tree(self.tmp.path(), id);
            self.run_as = Some(id);
        }
        self
    }

    /// A home with a few ordinary dotfiles (`~/.zshrc`, `~/.gitconfig`,
    /// `~/.config/nvim/init.lua`), fixed modes and fixed mtimes in the past
    /// (so the files cache treats them as settled).
    pub fn with_dotfiles() -> TestEnv {
        let e = TestEnv::new();
        e.write(".zshrc", b"export EDITOR=nvim\n", 0o644);
        e.write(".gitconfig", b"[user]\n\tname = Test\n", 0o644);
        e.write(".config/nvim/init.lua", b"vim.o.number = true\n", 0o644);
        set_mode(&e.home.join(".config"), 0o755);
        set_mode(&e.home.join(".config/nvim"), 0o755);
        for (i, p) in [
            ".config/nvim/init.lua",
            ".zshrc",
            ".gitconfig",
            ".config/nvim",
            ".config",
        ]
        .iter()
        .enumerate()
        {
            set_mtime(&e.home.join(p), 1_600_000_000 + i as i64, 123_456_789);
        }
        e
    }

    /// Write `rel` under home (creating parents) with `mode`.
    pub fn write(&self, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = self.home.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        set_mode(&p, mode);
        p
    }

    /// Run `bin --json args...` with HOME and BACKUP_REPO set, every other
    /// variable cleared, plus `env`. Returns (exit code, envelope, stderr).
    ///
    /// Asserts: stdout is exactly one JSON document, it validates against the
    /// schema, and its `exit_code` equals the process exit code.
    pub fn run(&self, bin: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
        // First, so that a `--` in `args` cannot turn it into a positional argument.
        let mut argv: Vec<&str> = vec!["--json"];
        argv.extend(args.iter().filter(|a| **a != "--json"));
        let out = self.output(bin, &argv, env);
        let (code, v) = parse_envelope(&out);
        (code, v, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// [`TestEnv::run`] without extra environment, returning (exit code, envelope).
    pub fn json(&self, bin: &str, args: &[&str]) -> (i32, Value) {
        let (c, v, _) = self.run(bin, args, &[]);
        (c, v)
    }

    /// [`TestEnv::json`] with `HOME` set to `home` instead (a second home
    /// sharing this environment's repository).
    pub fn json_in(&self, home: &Path, bin: &str, args: &[&str]) -> (i32, Value) {
        let mut argv: Vec<&str> = vec!["--json"];
        argv.extend(args.iter().filter(|a| **a != "--json"));
        let out = self
            .command(bin, &argv, &[])
            .env("HOME", home)
            .output()
            .unwrap_or_else(|e| panic!("running {bin}: {e}"));
        parse_envelope(&out)
    }

    /// Write `text` to a config file outside the home (`<tmp>/config.toml`,
    /// replacing an earlier one); its path, for `BACKUP_CONFIG` or `--config`.
    pub fn config_file(&self, text: &str) -> String {
        let p = self.tmp.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        p.to_str().expect("UTF-8 temp path").to_string()
    }

    /// [`TestEnv::json`] with `BACKUP_CONFIG=cfg`.
    pub fn json_with_config(&self, cfg: &str, bin: &str, args: &[&str]) -> (i32, Value) {
        let (c, v, _) = self.run(bin, args, &[("BACKUP_CONFIG", cfg)]);
        (c, v)
    }

    /// `backup-checkpoint manual NAME --path P...`, which must succeed; the envelope.
    pub fn checkpoint(&self, name: &str, paths: &[&str]) -> Value {
        let mut args = vec!["manual", name];
        for p in paths {
            args.push("--path");
            args.push(p);
        }
        let (rc, v) = self.json("backup-checkpoint", &args);
        assert_eq!(rc, 0, "{v}");
        v
    }

    /// The command with the clean environment, not yet run.
    pub fn command(&self, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = self.program(exe(bin));
        cmd.args(args);
        self.clean_env(&mut cmd);
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Any program, run as [`TestEnv::run_as`] when set (through `setpriv`);
    /// the environment is the caller's.
    pub fn program(&self, program: &str) -> Command {
        match self.run_as {
            None => Command::new(program),
            Some(id) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={id}"))
                    .arg(format!("--regid={id}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                c
            }
        }
    }

    /// Clear the environment and set PATH, HOME and BACKUP_REPO.
    pub fn clean_env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("BACKUP_REPO", &self.repo)
            // Package-list captures run this machine's package managers: off
            // unless a test turns them on (tests/packages.rs).
            .env("BACKUP_PACKAGES", "0");
    }

    /// Run and return the raw output (no `--json` added).
    pub fn output(&self, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(bin, args, env)
            .output()
            .unwrap_or_else(|e| panic!("running {bin}: {e}"))
    }

    /// Files under the repository with their bytes and modes (relative path → (mode, bytes)).
    pub fn repo_state(&self) -> BTreeMap<Vec<u8>, (u32, Vec<u8>)> {
        dir_state(&self.repo)
    }
}

/// `chown -R uid:uid root` without following symlinks.
pub fn chown_tree(root: &Path, id: u32) {
    std::os::unix::fs::lchown(root, Some(id), Some(id)).unwrap();
    for (rel, _) in walk(root) {
        std::os::unix::fs::lchown(root.join(OsStr::from_bytes(&rel)), Some(id), Some(id)).unwrap();
    }
}

/// Parse stdout as exactly one envelope and check it against the schema and the exit code.
pub fn parse_envelope(out: &Output) -> (i32, Value) {
    let text = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    // `from_str` rejects trailing data, so this proves there is exactly one document.
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not exactly one JSON document ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_valid_envelope(&v);
    let code = out.status.code().expect("exited normally");
    assert_eq!(
        v["exit_code"], code,
        "exit_code in the envelope equals the process exit code: {v:#}"
    );
    (code, v)
}

/// Every file under `dir` (recursively; directories as entries with no bytes):
/// relative path bytes → (mode & 0o7777, content). Symlinks map to their target.
pub fn dir_state(dir: &Path) -> BTreeMap<Vec<u8>, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for (rel, meta) in walk(dir) {
        let p = dir.join(OsStr::from_bytes(&rel));
        let bytes = if meta.file_type().is_file() {
            std::fs::read(&p).unwrap()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().into_os_string().into_vec()
        } else {
            Vec::new()
        };
        out.insert(rel, (meta.mode() & 0o7777, bytes));
    }
    out
}

/// Every entry under `root` (not `root` itself), depth first, sorted by name,
/// as (relative path bytes, lstat metadata).
pub fn walk(root: &Path) -> Vec<(Vec<u8>, std::fs::Metadata)> {
    fn go(root: &Path, rel: &[u8], out: &mut Vec<(Vec<u8>, std::fs::Metadata)>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        let mut names: Vec<OsString> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let meta = std::fs::symlink_metadata(root.join(OsStr::from_bytes(&child))).unwrap();
            let is_dir = meta.is_dir();
            out.push((child.clone(), meta));
            if is_dir {
                go(root, &child, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, b"", &mut out);
    out
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Set permission bits.
pub fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Set the mtime (and atime) of `p` without following a symlink.
pub fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// What [`compare_trees`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Compare mtimes (ns) of entries.
    pub mtime: bool,
    /// Compare mtimes of directories too (a directory's mtime changes when an entry is added or removed).
    pub dir_mtime: bool,
    /// Compare mtimes of symlinks too.
    pub symlink_mtime: bool,
    /// Compare mode and mtime of the two roots themselves.
    pub root_meta: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            mtime: true,
            dir_mtime: true,
            symlink_mtime: true,
            root_meta: false,
        }
    }
}

/// Differences between two trees, one line each (empty when equal).
pub fn compare_trees(a: &Path, b: &Path, how: Compare) -> Vec<String> {
    let mut diffs = Vec::new();
    let show = |rel: &[u8]| format!("{:?}", String::from_utf8_lossy(rel));
    if how.root_meta {
        let (ma, mb) = (
            std::fs::symlink_metadata(a).unwrap(),
            std::fs::symlink_metadata(b).unwrap(),
        );
        if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            diffs.push(format!(
                "root: mode {:04o} != {:04o}",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        if how.mtime && how.dir_mtime && mtime_ns(&ma) != mtime_ns(&mb) {
            diffs.push(format!(
                "root: mtime {} != {}",
                mtime_ns(&ma),
                mtime_ns(&mb)
            ));
        }
    }
    let wa: BTreeMap<Vec<u8>, std::fs::Metadata> = walk(a).into_iter().collect();
    let wb: BTreeMap<Vec<u8>, std::fs::Metadata> = walk(b).into_iter().collect();
    for rel in wa.keys().filter(|k| !wb.contains_key(*k)) {
        diffs.push(format!("{}: only in {}", show(rel), a.display()));
    }
    for rel in wb.keys().filter(|k| !wa.contains_key(*k)) {
        diffs.push(format!("{}: only in {}", show(rel), b.display()));
    }
    for (rel, ma) in &wa {
        let Some(mb) = wb.get(rel) else { continue };
        let kind = |m: &std::fs::Metadata| {
            let t = m.file_type();
            if t.is_symlink() {
                "symlink"
            } else if t.is_dir() {
                "dir"
            } else if t.is_file() {
                "file"
            } else {
                "other"
            }
        };
        let (ka, kb) = (kind(ma), kind(mb));
        if ka != kb {
            diffs.push(format!("{}: type {ka} != {kb}", show(rel)));
            continue;
        }
        let pa = a.join(OsStr::from_bytes(rel));
        let pb = b.join(OsStr::from_bytes(rel));
        match ka {
            "file" => {
                let (ba, bb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
                if ba != bb {
                    diffs.push(format!(
                        "{}: content differs ({} vs {} bytes)",
                        show(rel),
                        ba.len(),
                        bb.len()
                    ));
                }
            }
            "symlink" => {
                let ta = std::fs::read_link(&pa).unwrap().into_os_string().into_vec();
                let tb = std::fs::read_link(&pb).unwrap().into_os_string().into_vec();
                if ta != tb {
                    diffs.push(format!(
                        "{}: symlink target {:?} != {:?}",
                        show(rel),
                        String::from_utf8_lossy(&ta),
                        String::from_utf8_lossy(&tb)
                    ));
                }
            }
            _ => {}
        }
        // Symlink permission bits are meaningless on Linux (always 0777).
        if ka != "symlink" && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            diffs.push(format!(
                "{}: mode {:04o} != {:04o}",
                show(rel),
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        let check_mtime = how.mtime
            && match ka {
                "dir" => how.dir_mtime,
                "symlink" => how.symlink_mtime,
                _ => true,
            };
        if check_mtime && mtime_ns(ma) != mtime_ns(mb) {
            diffs.push(format!(
                "{}: mtime {} != {}",
                show(rel),
                mtime_ns(ma),
                mtime_ns(mb)
            ));
        }
    }
    diffs
}

/// Panic with every difference unless the trees under `a` and `b` are equal in
/// type, bytes, mode (& 0o7777), symlink target (verbatim) and mtime (ns).
pub fn assert_trees_equal(a: &Path, b: &Path) {
    assert_trees_equal_with(a, b, Compare::default());
}

/// [`assert_trees_equal`] with a choice of what to compare.
pub fn assert_trees_equal_with(a: &Path, b: &Path, how: Compare) {
    let diffs = compare_trees(a, b, how);
    assert!(
        diffs.is_empty(),
        "trees differ ({} vs {}):\n  {}",
        a.display(),
        b.display(),
        diffs.join("\n  ")
    );
}

/// Size of the big file in [`build_odd_tree`]: above the engine's 4 MiB
/// small-file limit, so the streaming read path is exercised.
pub const BIG_FILE_SIZE: usize = 5 * 1024 * 1024 + 17;

/// Deterministic pseudo-random bytes (xorshift), so blobs never dedup by accident.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Relative paths (bytes) of the entries [`build_odd_tree`] makes, for tests that look for one.
pub mod odd {
    /// A plain text file.
    pub const PLAIN: &[u8] = b"plain.txt";
    /// The 5 MB file.
    pub const BIG: &[u8] = b"big.bin";
    /// A file named with a Latin-1 byte (not UTF-8).
    pub const NON_UTF8_FILE: &[u8] = b"caf\xe9";
    /// A directory named with an invalid UTF-8 byte.
    pub const NON_UTF8_DIR: &[u8] = b"dir\xff";
    /// A name with a newline.
    pub const NEWLINE: &[u8] = b"new\nline";
    /// A name with spaces.
    pub const SPACES: &[u8] = b"with some spaces.txt";
    /// A dangling symlink.
    pub const DANGLING: &[u8] = b"links/dangling";
    /// A symlink whose target is not UTF-8.
    pub const NON_UTF8_TARGET: &[u8] = b"links/latin1-target";
    /// An empty directory.
    pub const EMPTY_DIR: &[u8] = b"empty-dir";
    /// An empty file.
    pub const EMPTY_FILE: &[u8] = b"empty";
}

/// Build a tree of awkward entries under `dir` (created if needed):
///
/// * regular files, an empty file, a 5 MB file ([`BIG_FILE_SIZE`]);
/// * an executable (0755) and odd modes (0600, 0640, 0444, 0751), a 0700 dir;
/// * symlinks: relative, absolute, dangling, to a directory, with a non-UTF-8 target;
/// * empty directories (one nested three deep);
/// * non-UTF-8 names (`caf\xe9`, `dir\xff/`), names with spaces and a newline.
///
/// Every entry (and `dir`) gets a distinct fixed mtime with a nanosecond part,
/// set after the tree is complete, so tree comparisons see real mtimes and the
/// files cache treats the files as settled.
pub fn build_odd_tree(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    set_mode(dir, 0o755);
    let file = |rel: &[u8], content: &[u8], mode: u32| {
        let p = dir.join(OsStr::from_bytes(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        set_mode(&p, mode);
    };
    let mkdir = |rel: &[u8], mode: u32| {
        let p = dir.join(OsStr::from_bytes(rel));
        std::fs::create_dir_all(&p).unwrap();
        set_mode(&p, mode);
    };
    let link = |rel: &[u8], target: &[u8]| {
        let p = dir.join(OsStr::from_bytes(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p).unwrap();
    };

    file(odd::PLAIN, b"plain text\n", 0o644);
    file(odd::EMPTY_FILE, b"", 0o644);
    file(odd::BIG, &noise(BIG_FILE_SIZE, 5), 0o644);
    file(b"bin/run.sh", b"#!/bin/sh\necho hello\n", 0o755);
    file(b"modes/private", b"only me\n", 0o600);
    file(b"modes/group", b"me and my group\n", 0o640);
    file(b"modes/readonly", b"read only\n", 0o444);
    file(b"modes/odd", b"odd exec bits\n", 0o751);
    mkdir(b"modes", 0o755);
    mkdir(b"bin", 0o755);
    mkdir(b"private-dir", 0o700);
    file(b"private-dir/notes", b"private notes\n", 0o600);
    file(odd::NON_UTF8_FILE, b"latin-1 name\n", 0o644);
    mkdir(odd::NON_UTF8_DIR, 0o755);
    file(
        b"dir\xff/inner \xfe file",
        b"inside a non-UTF-8 dir\n",
        0o644,
    );
    file(odd::NEWLINE, b"newline in the name\n", 0o644);
    file(odd::SPACES, b"spaces in the name\n", 0o644);
    mkdir(odd::EMPTY_DIR, 0o755);
    mkdir(b"nested/deeper/deepest", 0o755);
    mkdir(b"nested", 0o755);
    mkdir(b"nested/deeper", 0o750);
    link(b"links/relative", b"../plain.txt");
    let abs = dir.join("plain.txt");
    link(b"links/absolute", abs.as_os_str().as_bytes());
    link(odd::DANGLING, b"no/such/file");
    link(b"links/to-dir", b"../modes");
    link(odd::NON_UTF8_TARGET, b"../caf\xe9");
    mkdir(b"links", 0o755);

    // Fixed mtimes: files and links first, then directories deepest first, then the root.
    let mut entries = walk(dir);
    entries.sort_by_key(|(rel, m)| (m.is_dir(), std::cmp::Reverse(rel.len())));
    for (i, (rel, _)) in entries.iter().enumerate() {
        set_mtime(
            &dir.join(OsStr::from_bytes(rel)),
            1_500_000_000 + i as i64 * 3600,
            (i as i64 * 7_919 + 1) % 1_000_000_000,
        );
    }
    set_mtime(dir, 1_499_000_000, 42);
}

/// Copy a tree (files, dirs, symlinks, modes and mtimes) from `from` to `to`.
/// Useful as an oracle for [`assert_trees_equal`].
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let entries = walk(from);
    for (rel, meta) in &entries {
        let src = from.join(OsStr::from_bytes(rel));
        let dst = to.join(OsStr::from_bytes(rel));
        let t = meta.file_type();
        if t.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
    // Metadata after content; directories deepest first so their mtimes stick.
    let mut order: Vec<&(Vec<u8>, std::fs::Metadata)> = entries.iter().collect();
    order.sort_by_key(|(rel, m)| (m.is_dir(), std::cmp::Reverse(rel.len())));
    for (rel, meta) in order {
        let dst = to.join(OsStr::from_bytes(rel));
        if !meta.file_type().is_symlink() {
            set_mode(&dst, meta.mode() & 0o7777);
        }
        set_mtime(&dst, meta.mtime(), meta.mtime_nsec());
    }
    let root = std::fs::metadata(from).unwrap();
    set_mode(to, root.mode() & 0o7777);
    set_mtime(to, root.mtime(), root.mtime_nsec());
}

/// Every regular file under `dir`, read whole.
pub fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(rel, _)| {
            let p = dir.join(OsStr::from_bytes(&rel));
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Decode a listed entry's full path bytes (`path_b64` when present, else `path`).
pub fn entry_path_bytes(entry: &Value) -> Vec<u8> {
    use base64::Engine as _;
    match entry["path_b64"].as_str() {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("path_b64 is base64"),
        None => entry["path"].as_str().expect("path").as_bytes().to_vec(),
    }
}

/// The file names in `<repo>/<sub>`, sorted.
pub fn names_in(repo: &Path, sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(repo.join(sub)) {
        Ok(l) => l.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Environment variables as owned pairs, for tests that build them up.
pub type EnvVars = Vec<(&'static str, String)>;

/// [`TestEnv::run`] with owned environment pairs.
pub fn run_with(
    e: &TestEnv,
    bin: &str,
    args: &[&str],
    env: &[(&'static str, String)],
) -> (i32, Value, String) {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    e.run(bin, args, &pairs)
}

/// Environment naming one directory target `drive` at `dir`, with fast retries.
pub fn target_env(dir: &Path) -> EnvVars {
    vec![
        ("BACKUP_EXTERNAL", format!("drive={}", dir.display())),
        ("BACKUP_RETRY_BASE_MS", "5".to_string()),
    ]
}

/// A throwaway rclone config with a `local`-type remote, and the environment
/// naming it as target `cloud` at `remote_dir`, with fast retries.
pub fn rclone_env(e: &TestEnv, remote_dir: &Path) -> EnvVars {
    let conf = e.tmp.path().join("rclone.conf");
    std::fs::write(&conf, "[loc]\ntype = local\n").unwrap();
    vec![
        (
            "BACKUP_EXTERNAL",
            format!("cloud=rclone:loc:{}", remote_dir.display()),
        ),
        ("RCLONE_CONFIG", conf.to_string_lossy().into_owned()),
        ("BACKUP_RETRY_BASE_MS", "5".into()),
    ]
}

/// Whether rclone runs here; when not, the test skips with a note naming
/// `untested` (a failure under `REQUIRE=rclone` or `CI=true`).
pub fn rclone_available(untested: &str) -> bool {
    let ok = Command::new("rclone")
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_unless_required(
            "rclone",
            &format!("rclone is not installed on this machine (CI installs it in .ci/run); {untested} was not tested"),
        );
    }
    ok
}

/// Whether strace can trace here; when not, the test skips with a note (a
/// failure under `REQUIRE=strace` or `CI=true`).
pub fn strace_works() -> bool {
    let ok = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_unless_required("strace", "strace is not installed or cannot trace here");
    }
    ok
}

/// `plain`'s environment and arguments, run under `strace -f` with `filter`
/// (the strace options that select and fail syscalls) in front.
pub fn under_strace<S: AsRef<OsStr>>(plain: &Command, filter: &[S]) -> Command {
    let mut cmd = Command::new("strace");
    cmd.env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.args(["-f", "-o", "/dev/null"]).args(filter);
    cmd.arg(plain.get_program()).args(plain.get_args());
    cmd
}
