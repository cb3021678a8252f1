//! What changes when a package manager's packages change: the cache key of
//! one capture. The rule per manager and its blind spots are written down in
//! docs/cli.md#package-lists; this module is that table in code.
//!
//! A key is a SHA-256 over the command line, `HOME`, a few environment
//! variables the manager reads, and the `stat` facts (size, mtime and ctime
//! in ns, inode, device, or "absent") of *witness* paths: files the manager
//! rewrites when it installs or removes something, and directories whose
//! entries it adds or removes (for [`Witness::Entries`], each entry's `lstat`
//! too, so a new version directory one level down counts). The program
//! itself is always a witness, so upgrading the manager runs it again.
//!
//! Some witnesses can only be learned by asking (pip's `sys.path`, npm's
//! global root); [`Discover`] says how, the answer is stored with the cache
//! entry, and it is asked again whenever the key changes.
//!
//! Racy keys: a witness modified within [`RACY_WINDOW_NS`] of now may change
//! again in the same timestamp tick without its stat changing, so such a key
//! is never stored (the next checkpoint runs the manager again). Same rule as
//! the files cache (`src/repo/cache.rs`).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// Witnesses modified this close to now make a key racy (not stored).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// A path whose change means the capture must run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Witness {
    /// The path's own stat (following symlinks).
    Stat(PathBuf),
    /// A directory's stat and the `lstat` of each of its entries.
    Entries(PathBuf),
}

/// How to learn witnesses that depend on the manager's own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discover {
    /// Ask pip's interpreter for `sys.path` and the user site directory.
    Python {
        /// The interpreter from pip's `#!` line.
        interpreter: PathBuf,
        /// Arguments on the `#!` line after the interpreter.
        args: Vec<String>,
    },
    /// `npm root -g`: the global `node_modules`.
    NpmRoot,
}

/// The key rule of one capture.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Known witnesses (the program first).
    pub witnesses: Vec<Witness>,
    /// Environment variables that change the answer (names; `HOME` always counts).
    pub env: Vec<String>,
    /// Witnesses to learn first, if any.
    pub discover: Option<Discover>,
}

/// A computed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// SHA-256 of everything the key covers.
    pub digest: Hash,
    /// A witness changed too recently (or could not be read): do not store.
    pub racy: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn base(program: &Path) -> &str {
    program.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// The built-in rule for a default capture, or `None` when it cannot be
/// cached safely (then it runs every time): the program is not the one the
/// rule is about, or the state it would watch is not where the rule expects.
pub fn builtin(name: &str, program: &Path) -> Option<Rule> {
    let mut rule = Rule {
        witnesses: vec![Witness::Stat(program.to_path_buf())],
        ..Rule::default()
    };
    let envs = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    match (name, base(program)) {
        ("apt", "apt-mark") => {
            let status = Path::new("/var/lib/dpkg/status");
            if !status.is_file() {
                return None;
            }
            rule.witnesses.push(Witness::Stat(status.into()));
            // `apt-mark auto/manual` changes only this one.
            rule.witnesses
                .push(Witness::Stat("/var/lib/apt/extended_states".into()));
        }
        ("brew" | "brewfile", "brew") => {
            // `<prefix>/bin/brew`, unless HOMEBREW_PREFIX says otherwise.
            let prefix = var("HOMEBREW_PREFIX")
                .map(PathBuf::from)
                .or_else(|| program.parent()?.parent().map(Path::to_path_buf))?;
            let (cellar, caskroom) = (prefix.join("Cellar"), prefix.join("Caskroom"));
            if !cellar.is_dir() && !caskroom.is_dir() {
                return None; // a wrapper, not a Homebrew prefix: nothing safe to watch
            }
            rule.witnesses.push(Witness::Entries(cellar));
            rule.witnesses.push(Witness::Entries(caskroom));
            rule.env = envs(&["HOMEBREW_PREFIX", "HOMEBREW_CELLAR", "HOMEBREW_REPOSITORY"]);
            if name == "brewfile" {
                // Taps live in the repository (`/usr/local/Homebrew` on Intel Macs,
                // where `bin/brew` is a symlink into it).
                let repo = std::fs::canonicalize(program)
                    .ok()
                    .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()))
                    .unwrap_or(prefix);
                rule.witnesses
                    .push(Witness::Entries(repo.join("Library/Taps")));
                // `mas` apps and VS Code extensions are in the Brewfile too.
                rule.witnesses.push(Witness::Stat("/Applications".into()));
                if let Some(dir) = vscode_extensions() {
                    rule.witnesses.push(Witness::Stat(dir));
                }
            }
        }
        ("pip", p) if p.starts_with("pip") => {
            let (interpreter, args) = shebang(program)?;
            rule.witnesses.push(Witness::Stat(interpreter.clone()));
            rule.env = envs(&[
                "PYTHONPATH",
                "PYTHONHOME",
                "PYTHONUSERBASE",
                "PYTHONNOUSERSITE",
                "PYTHONSAFEPATH",
                "VIRTUAL_ENV",
            ]);
            rule.discover = Some(Discover::Python { interpreter, args });
        }
        ("code", "code") => {
            let dir = vscode_extensions().filter(|d| d.is_dir())?;
            rule.witnesses
                .push(Witness::Stat(dir.join("extensions.json")));
            rule.witnesses.push(Witness::Stat(dir.join(".obsolete")));
            rule.witnesses.push(Witness::Stat(dir));
            rule.env = envs(&["VSCODE_EXTENSIONS", "VSCODE_PORTABLE"]);
        }
        ("npm", "npm") => {
            let userconfig = var("NPM_CONFIG_USERCONFIG")
                .or_else(|| var("npm_config_userconfig"))
                .map(PathBuf::from)
                .or_else(|| Some(home()?.join(".npmrc")))?;
            rule.witnesses.push(Witness::Stat(userconfig));
            // Every npm_config_* variable is configuration (prefix, globalconfig, …).
            let mut names: Vec<String> = std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .filter(|k| k.to_ascii_lowercase().starts_with("npm_config_"))
                .collect();
            names.sort();
            rule.env = names;
            rule.discover = Some(Discover::NpmRoot);
        }
        _ => return None,
    }
    Some(rule)
}

/// A rule from `[packages.watch]`: the program and the configured paths
/// (directories with their entries, anything else by its stat).
pub fn configured(program: &Path, paths: &[String]) -> Rule {
    let mut witnesses = vec![Witness::Stat(program.to_path_buf())];
    for p in paths {
        let p = PathBuf::from(p);
        witnesses.push(if p.is_dir() {
            Witness::Entries(p)
        } else {
            Witness::Stat(p)
        });
    }
    Rule {
        witnesses,
        env: Vec::new(),
        discover: None,
    }
}

fn vscode_extensions() -> Option<PathBuf> {
    if let Some(d) = var("VSCODE_EXTENSIONS").filter(|d| !d.is_empty()) {
        return Some(d.into());
    }
    if let Some(d) = var("VSCODE_PORTABLE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("extensions"));
    }
    Some(home()?.join(".vscode/extensions"))
}

/// The interpreter on a script's `#!` line (`/usr/bin/env python3` resolved
/// on `PATH`); `None` unless it is a Python (a pyenv/asdf shim is a shell
/// script that picks the interpreter per directory: not cacheable).
fn shebang(program: &Path) -> Option<(PathBuf, Vec<String>)> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = std::str::from_utf8(line.split(|b| *b == b'\n').next()?).ok()?;
    let mut words = line.split_whitespace();
    let mut interp = PathBuf::from(words.next()?);
    if base(&interp) == "env" {
        interp = which::which(words.next()?).ok()?;
    }
    if !base(&interp).starts_with("python") {
        return None;
    }
    Some((interp, words.map(str::to_string).collect()))
}

/// Python code printing the user site directory and `sys.path`, one per line.
pub const PYTHON_PATHS: &str =
    "import site, sys\nprint(site.getusersitepackages())\nfor p in sys.path: print(p)\n";

/// Witnesses from a discovery's output, or `None` when it is not usable
/// (then the capture is not cached).
pub fn discovered(how: &Discover, stdout: &[u8]) -> Option<Vec<Witness>> {
    let text = std::str::from_utf8(stdout).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match how {
        Discover::Python { .. } => {
            let out: Vec<Witness> = lines
                .iter()
                .filter(|l| l.starts_with('/'))
                .map(|l| Witness::Stat(PathBuf::from(l)))
                .collect();
            (!out.is_empty()).then_some(out)
        }
        Discover::NpmRoot => {
            let [root] = lines.as_slice() else {
                return None;
            };
            let root = PathBuf::from(root);
            if !root.is_absolute() || !root.is_dir() {
                return None;
            }
            let mut out = vec![Witness::Entries(root.clone())];
            // `<prefix>/lib/node_modules` → `<prefix>/etc/npmrc`, the global config.
            if let Some(prefix) = root.parent().and_then(Path::parent) {
                out.push(Witness::Stat(prefix.join("etc/npmrc")));
            }
            Some(out)
        }
    }
}

/// The key of `argv` under `rule` with `extra` (discovered) witnesses, at `now_ns`.
pub fn compute(argv: &[String], rule: &Rule, extra: &[Witness], now_ns: i64) -> Key {
    let mut text = String::new();
    let mut racy = false;
    for a in argv {
        text.push_str(&format!("arg {a:?}\n"));
    }
    text.push_str(&format!("env HOME={:?}\n", var("HOME")));
    for name in &rule.env {
        text.push_str(&format!("env {name}={:?}\n", var(name)));
    }
    for w in rule.witnesses.iter().chain(extra) {
        match w {
            Witness::Stat(p) => stat_line(&mut text, "s", p, true, now_ns, &mut racy),
            Witness::Entries(dir) => {
                stat_line(&mut text, "d", dir, true, now_ns, &mut racy);
                let mut names: Vec<OsString> = match std::fs::read_dir(dir) {
                    Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                    Err(_) => Vec::new(),
                };
                names.sort();
                for n in names {
                    stat_line(&mut text, "e", &dir.join(n), false, now_ns, &mut racy);
                }
            }
        }
    }
    Key {
        digest: Hash::of(text.as_bytes()),
        racy,
    }
}

fn stat_line(out: &mut String, tag: &str, p: &Path, follow: bool, now_ns: i64, racy: &mut bool) {
    let md = if follow {
        std::fs::metadata(p)
    } else {
        std::fs::symlink_metadata(p)
    };
    match md {
        Ok(m) => {
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            let ctime = m.ctime() * 1_000_000_000 + m.ctime_nsec();
            if now_ns - mtime.max(ctime) < RACY_WINDOW_NS {
                *racy = true;
            }
            out.push_str(&format!(
                "{tag} {p:?} {} {mtime} {ctime} {} {}\n",
                m.size(),
                m.ino(),
                m.dev()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.push_str(&format!("{tag} {p:?} absent\n"));
        }
        Err(e) => {
            // Unreadable now: whatever we saw cannot vouch for a later run.
            *racy = true;
            out.push_str(&format!("{tag} {p:?} error {:?}\n", e.kind()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_witness_changes_the_key_and_a_fresh_one_is_racy() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("status");
        std::fs::write(&f, "a").unwrap();
        let rule = Rule {
            witnesses: vec![
                Witness::Stat(f.clone()),
                Witness::Entries(dir.path().into()),
            ],
            ..Rule::default()
        };
        let argv = vec!["x".to_string()];
        let now = crate::time::now_ns();
        let k1 = compute(&argv, &rule, &[], now);
        assert!(k1.racy, "just written");
        assert!(!compute(&argv, &rule, &[], now + 3 * RACY_WINDOW_NS).racy);
        assert_eq!(k1.digest, compute(&argv, &rule, &[], now).digest);
        std::fs::write(&f, "b").unwrap(); // same size, new mtime/ctime
        assert_ne!(k1.digest, compute(&argv, &rule, &[], now).digest);
        let k2 = compute(&argv, &rule, &[], now);
        std::fs::create_dir(dir.path().join("new")).unwrap();
        assert_ne!(k2.digest, compute(&argv, &rule, &[], now).digest);
        let other = vec!["y".to_string()];
        assert_ne!(
            compute(&argv, &rule, &[], now).digest,
            compute(&other, &rule, &[], now).digest
        );
    }

    #[test]
    fn discovery_output_must_be_usable() {
        let npm = Discover::NpmRoot;
        assert!(discovered(&npm, b"relative\n").is_none());
        assert!(discovered(&npm, b"/tmp\n/usr\n").is_none());
        assert!(discovered(&npm, b"/nonexistent-npm-root\n").is_none());
        let root = tempfile::tempdir().unwrap();
        let w = discovered(&npm, format!("{}\n", root.path().display()).as_bytes()).unwrap();
        assert_eq!(w[0], Witness::Entries(root.path().into()));
        let py = Discover::Python {
            interpreter: "/usr/bin/python3".into(),
            args: vec![],
        };
        let w = discovered(
            &py,
            b"/home/u/.local/lib/python3/site-packages\n\n/usr/lib/python3\n",
        )
        .unwrap();
        assert_eq!(w.len(), 2);
        assert!(discovered(&py, b"\xff\n").is_none());
    }

    #[test]
    fn pip_behind_a_shim_or_a_non_python_is_not_cacheable() {
        let dir = tempfile::tempdir().unwrap();
        let pip = dir.path().join("pip");
        std::fs::write(&pip, "#!/usr/bin/env bash\nexec pyenv exec pip \"$@\"\n").unwrap();
        assert!(builtin("pip", &pip).is_none());
        std::fs::write(&pip, "#!/usr/bin/python3 -s\nimport pip\n").unwrap();
        let rule = builtin("pip", &pip).unwrap();
        assert_eq!(
            rule.discover,
            Some(Discover::Python {
                interpreter: "/usr/bin/python3".into(),
                args: vec!["-s".into()]
            })
        );
        // A `brew` outside a Homebrew prefix (no Cellar, no Caskroom): not cached.
        let brew = dir.path().join("bin/brew");
        std::fs::create_dir_all(brew.parent().unwrap()).unwrap();
        std::fs::write(&brew, "#!/bin/sh\n").unwrap();
        assert!(builtin("brew", &brew).is_none());
        std::fs::create_dir(dir.path().join("Cellar")).unwrap();
        assert!(builtin("brew", &brew).is_some());
        assert!(builtin("brew", &pip).is_none(), "rule follows the program");
    }
}
