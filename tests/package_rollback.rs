//! The package plan of `backup-rollback` through the real binaries, with
//! fake `brew` and `pip` on `PATH`: shell scripts that keep their package
//! state in a temp directory and log every call. A phase installs three
//! packages and upgrades one; the rollback's plan is exact, `--packages
//! apply` returns the fake state to the checkpoint's with the commands in
//! order; a failed capture makes the plan unknown and `apply` refuse; a
//! package of the checkpoint (or one something kept depends on) is never
//! removed; a hanging command is stopped and reported.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// Fake managers and their state.
struct Fake {
    bin: PathBuf,
    state: PathBuf,
}

const BREW: &str = r#"S="$FAKE_STATE"
printf 'brew %s\n' "$*" >> "$S/calls"
case "$1" in
  list) cat "$S/formulae" "$S/casks" ;;
  bundle)
    if [ "$2" = dump ]; then
      while read -r n v; do printf 'brew "%s"\n' "$n"; done < "$S/formulae"
      while read -r n v; do printf 'cask "%s"\n' "$n"; done < "$S/casks"
    else
      f="${2#--file=}"
      sed -n 's/^brew "\(.*\)"$/\1/p' "$f" | while read -r n; do
        grep -q "^$n " "$S/formulae" || echo "$n 1.0" >> "$S/formulae"; done
      sed -n 's/^cask "\(.*\)"$/\1/p' "$f" | while read -r n; do
        grep -q "^$n " "$S/casks" || echo "$n 1.0" >> "$S/casks"; done
    fi ;;
  uninstall)
    shift; file=formulae
    if [ "$1" = --cask ]; then file=casks; shift; fi
    for n in "$@"; do
      grep -q "^$n " "$S/$file" || { echo "Error: No such keg: $n" >&2; exit 1; }
      grep -v "^$n " "$S/$file" > "$S/tmp"; mv "$S/tmp" "$S/$file"
    done ;;
  uses) [ -f "$S/uses-$3" ] && cat "$S/uses-$3"; exit 0 ;;
  *) echo "fake brew: $1?" >&2; exit 1 ;;
esac"#;

const PIP: &str = r#"S="$FAKE_STATE"
printf 'pip %s\n' "$*" >> "$S/calls"
case "$1" in
  list) [ -f "$S/pip-fails" ] && { echo 'pip: broken' >&2; exit 2; }; cat "$S/pip" ;;
  show) echo "Name: $2"; printf 'Required-by: '; cat "$S/required-$2" 2>/dev/null; echo ;;
  uninstall)
    shift; [ "$1" = -y ] && shift
    for n in "$@"; do grep -vF "$n==" "$S/pip" > "$S/tmp"; mv "$S/tmp" "$S/pip"; done ;;
  install)
    [ -f "$S/pip-hangs" ] && { sleep 60; exit 0; }
    shift
    for spec in "$@"; do n="${spec%%==*}"
      grep -v "^$n==" "$S/pip" > "$S/tmp"; mv "$S/tmp" "$S/pip"; echo "$spec" >> "$S/pip"; done ;;
  *) exit 1 ;;
esac"#;

impl Fake {
    fn new(e: &TestEnv) -> Fake {
        let bin = e.tmp.path().join("fakebin");
        let state = e.tmp.path().join("fakestate");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        for (name, body) in [("brew", BREW), ("pip", PIP)] {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let f = Fake { bin, state };
        f.set("formulae", "git 2.43.0\n");
        f.set("casks", "");
        f.set("pip", "requests==2.30.0\nsix==1.16.0\n");
        f.set("calls", "");
        e.write(
            ".config/dotfiles-backup/config.toml",
            b"[packages]\ncache = false\ntimeout_secs = 5\napply_timeout_secs = 2\n",
            0o644,
        );
        f
    }

    fn set(&self, name: &str, content: &str) {
        std::fs::write(self.state.join(name), content).unwrap();
    }

    fn get(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join(name)).unwrap()
    }

    /// A state file's lines, sorted (the fakes append).
    fn sorted(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self.get(name).lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// Calls that change something (not lists, dumps, or dependency questions).
    fn changes(&self) -> Vec<String> {
        self.get("calls")
            .lines()
            .filter(|l| {
                ![
                    "brew list",
                    "brew bundle dump",
                    "brew uses",
                    "pip list",
                    "pip show",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_string)
            .collect()
    }

    fn run(&self, e: &TestEnv, bin: &str, args: &[&str]) -> (i32, Value) {
        let path = format!("{}:/usr/bin:/bin", self.bin.display());
        let state = self.state.to_string_lossy().into_owned();
        let env = [
            ("PATH", path.as_str()),
            ("BACKUP_PACKAGES", "brew,brewfile,pip"),
            ("FAKE_STATE", state.as_str()),
        ];
        let (rc, v, _) = e.run(bin, args, &env);
        (rc, v)
    }

    /// The phase: installs jq, fzf and the cask iterm2, upgrades requests.
    fn phase(&self, e: &TestEnv) {
        let (rc, v) = self.run(e, "backup-checkpoint", &["auto", "pre-homebrew"]);
        assert_eq!(rc, 0, "{v:#}");
        self.set("formulae", "git 2.43.0\njq 1.7\nfzf 0.50\n");
        self.set("casks", "iterm2 3.5\n");
        self.set("pip", "requests==2.31.0\nsix==1.16.0\n");
        let (rc, v) = self.run(e, "backup-checkpoint", &["auto", "pre-dotfiles"]);
        assert_eq!(rc, 0, "{v:#}");
        self.set("calls", "");
    }
}

fn manager<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["package_plan"]["managers"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in the package plan: {v:#}"))
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[test]
fn plan_is_exact_and_apply_restores_the_checkpoints_packages_in_order() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    f.phase(&e);
    let (brew, pip) = (p(&f.bin.join("brew")), p(&f.bin.join("pip")));

    let (rc, v) = f.run(&e, "backup-rollback", &["pre-homebrew", "--dry-run"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["package_plan"]["status"], "changes");
    let b = manager(&v, "brew");
    assert_eq!(b["status"], "planned");
    assert_eq!(
        b["installed"],
        json!([
            {"name": "brew fzf", "version": "0.50"},
            {"name": "brew jq", "version": "1.7"},
            {"name": "cask iterm2", "version": "3.5"}
        ])
    );
    assert_eq!(b["removed"], json!([]));
    assert_eq!(
        b["commands"],
        json!([
            [brew, "uninstall", "--cask", "iterm2"],
            [brew, "uninstall", "fzf", "jq"]
        ])
    );
    let pp = manager(&v, "pip");
    assert_eq!(
        pp["upgraded"],
        json!([{"name": "requests", "from": "2.30.0", "to": "2.31.0"}])
    );
    assert_eq!(
        pp["commands"],
        json!([[pip, "install", "requests==2.30.0"]])
    );
    assert_eq!(v["package_plan"]["managers"].as_array().unwrap().len(), 2);
    let tmp = p(e.tmp.path());
    let shown = serde_json::to_string(&v["package_plan"])
        .unwrap()
        .replace(&tmp, "[TMP]");
    insta::assert_json_snapshot!(
        "package_plan",
        serde_json::from_str::<Value>(&shown).unwrap()
    );
    assert!(
        f.changes().is_empty(),
        "a dry run changes nothing: {:?}",
        f.changes()
    );

    // The human form shows each change and command.
    let path = format!("{}:/usr/bin:/bin", f.bin.display());
    let state = p(&f.state);
    let out = e
        .command(
            "backup-rollback",
            &["pre-homebrew", "--dry-run"],
            &[
                ("PATH", &path),
                ("BACKUP_PACKAGES", "brew,brewfile,pip"),
                ("FAKE_STATE", &state),
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("packages brew: 3 installed, 0 removed, 0 upgraded"),
        "{text}"
    );
    assert!(text.contains("+ cask iterm2 3.5"), "{text}");
    assert!(
        text.contains(&format!("reverse: {brew} uninstall --cask iterm2")),
        "{text}"
    );
    assert!(text.contains("~ requests 2.30.0 -> 2.31.0"), "{text}");

    // The default shows only; the files are rolled back, the packages stay.
    let (rc, v) = f.run(&e, "backup-rollback", &["pre-homebrew"]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(v.get("package_apply").is_none());
    assert!(f.changes().is_empty(), "{:?}", f.changes());

    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--packages", "apply"],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(
        f.changes(),
        vec![
            "brew uninstall --cask iterm2",
            "brew uninstall fzf jq",
            "pip install requests==2.30.0"
        ]
    );
    assert_eq!(f.sorted("formulae"), vec!["git 2.43.0"]);
    assert_eq!(f.get("casks"), "");
    assert_eq!(f.sorted("pip"), vec!["requests==2.30.0", "six==1.16.0"]);
    assert_eq!(
        v["package_apply"]["ran"].as_array().unwrap().len(),
        3,
        "{v:#}"
    );
    assert!(v["package_apply"]["ran"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "ok"));

    // Again: nothing left to reverse.
    let (rc, v) = f.run(&e, "backup-rollback", &["pre-homebrew", "--dry-run"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["package_plan"]["status"], "nothing", "{v:#}");
}

#[test]
fn reinstalls_go_through_the_checkpoints_brewfile() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    f.set("formulae", "git 2.43.0\nwget 1.21\n");
    let (rc, v) = f.run(&e, "backup-checkpoint", &["auto", "pre-homebrew"]);
    assert_eq!(rc, 0, "{v:#}");
    f.set("formulae", "git 2.43.0\n");
    f.set("calls", "");
    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--packages", "apply"],
    );
    assert_eq!(rc, 0, "{v:#}");
    let b = manager(&v, "brew");
    let file = b["files"][0]["path"].as_str().unwrap().to_string();
    assert!(
        file.starts_with(&p(&e.repo)),
        "the Brewfile goes to the repository: {file}"
    );
    assert_eq!(
        f.changes(),
        vec![format!("brew bundle --file={file} install")]
    );
    assert_eq!(f.sorted("formulae"), vec!["git 2.43.0", "wget 1.0"]);
}

#[test]
fn a_failed_capture_makes_the_plan_unknown_and_apply_refuse() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    f.set("pip-fails", "");
    let (rc, v) = f.run(&e, "backup-checkpoint", &["auto", "pre-homebrew"]);
    assert_eq!(rc, 0, "{v:#}");
    std::fs::remove_file(f.state.join("pip-fails")).unwrap();
    f.set("formulae", "git 2.43.0\njq 1.7\n");
    e.write(".zshrc", b"changed\n", 0o644);
    f.set("calls", "");

    let (rc, v) = f.run(&e, "backup-rollback", &["pre-homebrew", "--dry-run"]);
    assert_eq!(rc, 0, "{v:#}");
    let pp = manager(&v, "pip");
    assert_eq!(pp["status"], "unknown");
    assert!(pp["reason"].as_str().unwrap().contains("failed"), "{pp:#}");
    assert_eq!(pp["commands"], json!([]));
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "package_plan_unknown"));

    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--packages", "apply"],
    );
    assert_eq!(rc, 5, "refused: {v:#}");
    assert_eq!(v["errors"][0]["code"], "package_plan_unknown", "{v:#}");
    assert!(f.changes().is_empty(), "{:?}", f.changes());
    assert_eq!(
        std::fs::read(e.home.join(".zshrc")).unwrap(),
        b"changed\n",
        "no file changed"
    );
}

#[test]
fn packages_of_the_checkpoint_and_their_dependencies_are_never_removed() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    f.set("formulae", "git 2.43.0\njq 1.6\n");
    let (rc, v) = f.run(&e, "backup-checkpoint", &["auto", "pre-homebrew"]);
    assert_eq!(rc, 0, "{v:#}");
    // jq upgraded (present in the checkpoint under another version), fzf
    // and tig installed; git (kept) now depends on fzf.
    f.set("formulae", "git 2.43.0\njq 1.7\nfzf 0.50\ntig 2.5\n");
    f.set("uses-fzf", "git\n");
    f.set("calls", "");
    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--packages", "apply"],
    );
    assert_eq!(rc, 0, "{v:#}");
    let b = manager(&v, "brew");
    assert_eq!(b["upgraded"][0]["name"], "jq");
    assert!(
        b["not_reversible"][0].as_str().unwrap().contains("jq"),
        "{b:#}"
    );
    assert_eq!(f.changes(), vec!["brew uninstall tig"]);
    assert_eq!(
        f.sorted("formulae"),
        vec!["fzf 0.50", "git 2.43.0", "jq 1.7"]
    );
    let skipped = &v["package_apply"]["skipped"];
    assert_eq!(skipped[0]["package"], "fzf", "{v:#}");
    assert!(skipped[0]["reason"].as_str().unwrap().contains("git"));
}

#[test]
fn a_hanging_command_is_stopped_and_odd_names_stay_one_argument() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    let (rc, v) = f.run(&e, "backup-checkpoint", &["auto", "pre-homebrew"]);
    assert_eq!(rc, 0, "{v:#}");
    let pwned = e.tmp.path().join("pwned");
    let odd = format!("x;touch {}", pwned.display());
    f.set(
        "pip",
        &format!("requests==2.31.0\nsix==1.16.0\n{odd}==1\n--index-url==2\n"),
    );
    f.set("pip-hangs", "");
    f.set("calls", "");
    let started = std::time::Instant::now();
    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--packages", "apply"],
    );
    assert!(started.elapsed().as_secs() < 30, "the hang was stopped");
    assert_eq!(rc, 3, "partial: {v:#}");
    assert_eq!(v["errors"][0]["code"], "package_apply_failed", "{v:#}");
    let ran = v["package_apply"]["ran"].as_array().unwrap();
    assert_eq!(ran.last().unwrap()["status"], "timeout", "{v:#}");
    assert_eq!(v["package_apply"]["stopped_at"], "pip");
    assert!(!pwned.exists(), "no shell ever saw the name");
    assert_eq!(
        f.changes(),
        vec![
            format!("pip uninstall -y {odd}"),
            "pip install requests==2.30.0".to_string()
        ]
    );
    let pp = manager(&v, "pip");
    assert!(pp["not_reversible"][0]
        .as_str()
        .unwrap()
        .contains("--index-url"));
}

#[test]
fn phase_only_shows_what_the_phase_did_and_refuses_apply() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    f.phase(&e);
    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--phase-only", "--dry-run"],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(
        manager(&v, "brew")["installed"].as_array().unwrap().len(),
        3
    );
    assert!(
        f.get("calls").is_empty(),
        "a phase undo plans from the checkpoints: {}",
        f.get("calls")
    );
    let (rc, v) = f.run(
        &e,
        "backup-rollback",
        &["pre-homebrew", "--phase-only", "--packages", "apply"],
    );
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "packages_apply_phase_only");
}

#[test]
fn apt_runs_only_as_root_and_never_takes_a_kept_package_along() {
    let e = TestEnv::with_dotfiles();
    let f = Fake::new(&e);
    let apt_mark = f.bin.join("apt-mark");
    std::fs::write(&apt_mark, "#!/bin/sh\ncat \"$FAKE_STATE/apt\"\n").unwrap();
    let apt_get = f.bin.join("apt-get");
    std::fs::write(
        &apt_get,
        r#"#!/bin/sh
echo "apt-get $*" >> "$FAKE_STATE/calls"
if [ "$1" = -s ]; then shift 3; for n in "$@"; do echo "Remv $n [1.0]"; done
  [ -f "$FAKE_STATE/extra" ] && echo "Remv libkept [2.0]"; exit 0; fi
[ "$1" = remove ] && { shift 2; for n in "$@"; do grep -vx "$n" "$FAKE_STATE/apt" > "$FAKE_STATE/t"; mv "$FAKE_STATE/t" "$FAKE_STATE/apt"; done; }
exit 0
"#,
    )
    .unwrap();
    for p in [&apt_mark, &apt_get] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    f.set("apt", "curl\ngit\n");
    let path = format!("{}:/usr/bin:/bin", f.bin.display());
    let state = p(&f.state);
    let env = [
        ("PATH", path.as_str()),
        ("BACKUP_PACKAGES", "apt"),
        ("FAKE_STATE", state.as_str()),
    ];
    let (rc, v, _) = e.run("backup-checkpoint", &["auto", "pre-homebrew"], &env);
    assert_eq!(rc, 0, "{v:#}");
    f.set("apt", "curl\ngit\nzsh\n");
    f.set("extra", "");
    f.set("calls", "");
    let (rc, v, _) = e.run(
        "backup-rollback",
        &["pre-homebrew", "--packages", "apply"],
        &env,
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(
        manager(&v, "apt")["commands"],
        json!([["apt-get", "remove", "-y", "zsh"]])
    );
    let skipped = v["package_apply"]["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    let root = rustix::process::geteuid().is_root();
    if root {
        assert!(skipped.contains("libkept"), "{v:#}");
        assert_eq!(f.get("calls"), "apt-get -s remove -y zsh\n");
        std::fs::remove_file(f.state.join("extra")).unwrap();
        let (rc, v, _) = e.run(
            "backup-rollback",
            &["pre-homebrew", "--packages", "apply"],
            &env,
        );
        assert_eq!(rc, 0, "{v:#}");
        assert_eq!(f.sorted("apt"), vec!["curl", "git"]);
    } else {
        assert!(skipped.contains("needs root"), "{v:#}");
        assert_eq!(f.get("calls"), "", "nothing of apt ran");
    }
}
