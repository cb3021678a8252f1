//! The package plan: what the package managers installed, removed and
//! upgraded between a checkpoint (the rollback's target) and now, and the
//! exact commands that would reverse it. Pure: two sets of captured lists in,
//! a [`PackagePlan`] out; nothing is run here.
//!
//! Rules that make it safe to show and to run ([`super::apply`]):
//!
//! * A list that is absent, failed or timed out on either side makes that
//!   manager's plan `unknown` with the reason; it is never read as "nothing
//!   installed" (which would plan removing everything, or nothing).
//! * A package present in the target checkpoint is never in a removal
//!   command, whatever its version now (a version change is an `upgraded`
//!   entry reversed by installing the old version, where the manager can).
//! * Commands are argument vectors, never shell strings; a package name that
//!   starts with `-` would be read as an option, so it is listed as not
//!   reversible instead of being put into a command.
//!
//! Per manager (capture name → commands):
//!
//! | capture | installed since | removed since | upgraded since |
//! |---|---|---|---|
//! | `brew` + `brewfile` | `brew uninstall --cask C…`, `brew uninstall F…`, `brew untap T…` | `brew bundle --file=<target Brewfile> install` | not reversible (Homebrew installs only the current version) |
//! | `apt` | `apt-get remove -y P…` | `apt-get install -y P…` | not captured (`apt-mark showmanual` gives no versions) |
//! | `pip` | `<pip> uninstall -y P…` (the interpreter's own pip, as captured) | `<pip> install P==V…` | `<pip> install P==OLD…` |
//! | `npm` | `npm uninstall -g P…` | `npm install -g P@V…` | `npm install -g P@OLD…` |
//! | `code` | `code --uninstall-extension X` (one per extension) | `code --install-extension X@V` | `code --install-extension X@OLD` |
//!
//! Any other (configured) capture is `unknown`: there is no reversal known
//! for it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::repo::snapshot::PackageList;

use super::{parse, Changed};

/// A package with its version (empty when the manager gives none).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// Name as the manager knows it (`git`, `cask iterm2` in a Brewfile, `@scope/x`).
    pub name: String,
    /// Version, or options for a Brewfile entry; may be empty.
    pub version: String,
}

/// One manager's part of the plan.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ManagerPlan {
    /// Manager (`brew`, `apt`, `pip`, `npm`, `code`, or a configured capture's name).
    pub name: String,
    /// `planned` (lists known on both sides) or `unknown` (see `reason`).
    pub status: &'static str,
    /// Why the plan for this manager is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Installed since the checkpoint: removed by the plan.
    pub installed: Vec<Package>,
    /// Removed since the checkpoint: installed again by the plan.
    pub removed: Vec<Package>,
    /// Version changed since the checkpoint (`from` is the checkpoint's).
    pub upgraded: Vec<Changed>,
    /// The reversal, in order: each an argument vector (program first).
    pub commands: Vec<Vec<String>>,
    /// Changes the commands do not reverse, each with why.
    pub not_reversible: Vec<String>,
    /// Files the commands read (the target's Brewfile): path and content.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PlanFile>,
}

/// A file a command of the plan reads, written when the plan is applied.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanFile {
    /// Where the command expects it.
    pub path: String,
    /// Its content (the checkpoint's captured Brewfile).
    pub content: String,
}

/// The package plan of a rollback or phase undo.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PackagePlan {
    /// `changes` (some manager has commands or not-reversible changes),
    /// `unknown` (no changes known, but some manager's plan is unknown), or
    /// `nothing` (every manager's lists are known and equal).
    pub status: &'static str,
    /// Managers whose lists differ or are unknown, sorted by name.
    pub managers: Vec<ManagerPlan>,
}

impl PackagePlan {
    /// Managers whose plan is unknown.
    pub fn unknown(&self) -> impl Iterator<Item = &ManagerPlan> {
        self.managers.iter().filter(|m| m.status == "unknown")
    }
}

/// Where the plan may refer to a file it needs (the target's Brewfile).
#[derive(Debug, Clone, Default)]
pub struct PlanPaths {
    /// Path given to `brew bundle --file=`.
    pub brewfile: String,
    /// What the later side is, in reasons (`now`, `at the next checkpoint`).
    pub later: String,
}

/// Plan reversing the change from `target` (lists at the checkpoint) to
/// `now` (lists captured now, or at a later checkpoint).
pub fn plan(target: &[PackageList], now: &[PackageList], paths: &PlanPaths) -> PackagePlan {
    let t: BTreeMap<&str, &PackageList> = target.iter().map(|l| (l.name.as_str(), l)).collect();
    let n: BTreeMap<&str, &PackageList> = now.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut names: BTreeSet<&str> = t.keys().chain(n.keys()).copied().collect();
    // The Brewfile is part of the brew plan.
    if names.remove("brewfile") {
        names.insert("brew");
    }
    let mut managers = Vec::new();
    for name in names {
        let m = if name == "brew" {
            brew(&t, &n, paths)
        } else {
            match known(name, &paths.later, &t, &n) {
                Err(reason) => unknown(name, reason),
                Ok((a, b)) => simple(name, a, b),
            }
        };
        if m.status == "unknown"
            || !m.commands.is_empty()
            || !m.not_reversible.is_empty()
            || !m.installed.is_empty()
            || !m.removed.is_empty()
            || !m.upgraded.is_empty()
        {
            managers.push(m);
        }
    }
    let status = if managers.iter().any(|m| m.status == "planned") {
        "changes"
    } else if managers.is_empty() {
        "nothing"
    } else {
        "unknown"
    };
    PackagePlan { status, managers }
}

fn unknown(name: &str, reason: String) -> ManagerPlan {
    ManagerPlan {
        name: name.to_string(),
        status: "unknown",
        reason: Some(reason),
        installed: Vec::new(),
        removed: Vec::new(),
        upgraded: Vec::new(),
        commands: Vec::new(),
        not_reversible: Vec::new(),
        files: Vec::new(),
    }
}

/// Both lists of `name`, or why the plan cannot use them.
fn known<'a>(
    name: &str,
    later: &str,
    t: &BTreeMap<&str, &'a PackageList>,
    n: &BTreeMap<&str, &'a PackageList>,
) -> Result<(&'a PackageList, &'a PackageList), String> {
    let side = |l: Option<&&'a PackageList>, when: &str| {
        match l {
        None => Err(format!(
            "there is no `{name}` list {when} (the program was not on PATH, or the capture was not configured), so what was installed is unknown"
        )),
        Some(l) if !l.is_known() => Err(format!(
            "the `{name}` list {when} {} (`{}`), so what was installed is unknown; nothing is planned for it",
            match l.status.as_deref() {
                Some("timeout") => "timed out",
                _ => "failed",
            },
            l.command.join(" ")
        )),
        Some(l) => Ok(*l),
    }
    };
    Ok((
        side(t.get(name), "at the checkpoint")?,
        side(n.get(name), later)?,
    ))
}

/// The name a manager compares packages by: pip normalises case and runs of
/// `-`, `_` and `.` (PEP 503: `PyYAML` is `pyyaml`, `typing_extensions` is
/// `typing-extensions`); VS Code extension ids ignore case. Compared
/// verbatim, one package would look removed and another installed, and the
/// plan would uninstall what the checkpoint holds.
pub fn canonical_name(manager: &str, name: &str) -> String {
    if name.starts_with('-') {
        // Refused as option-like anyway; shown as it is.
        return name.to_string();
    }
    match manager {
        "pip" => {
            let mut out = String::with_capacity(name.len());
            let mut in_run = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    if !in_run {
                        out.push('-');
                    }
                    in_run = true;
                } else {
                    out.extend(c.to_lowercase());
                    in_run = false;
                }
            }
            out
        }
        "code" => name.to_lowercase(),
        _ => name.to_string(),
    }
}

/// [`delta`] comparing by [`canonical_name`], reporting each package under
/// the name its manager listed (commands use the manager's own spelling).
fn canonical_delta(
    manager: &str,
    a: BTreeMap<String, String>,
    b: BTreeMap<String, String>,
) -> (Vec<Package>, Vec<Package>, Vec<Changed>) {
    let spelled = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.keys()
            .map(|k| (canonical_name(manager, k), k.clone()))
            .collect()
    };
    let (was, now) = (spelled(&a), spelled(&b));
    let keyed = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(k, v)| (canonical_name(manager, &k), v))
            .collect()
    };
    let (mut installed, mut removed, mut upgraded) = delta(&keyed(a), &keyed(b));
    let respell = |name: &mut String, from: &BTreeMap<String, String>| {
        if let Some(original) = from.get(name.as_str()) {
            name.clone_from(original);
        }
    };
    installed
        .iter_mut()
        .for_each(|p| respell(&mut p.name, &now));
    removed.iter_mut().for_each(|p| respell(&mut p.name, &was));
    upgraded.iter_mut().for_each(|c| respell(&mut c.name, &now));
    (installed, removed, upgraded)
}

/// Set difference of two parsed lists: (installed since, removed since, version changed).
fn delta(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> (Vec<Package>, Vec<Package>, Vec<Changed>) {
    let pkg = |(k, v): (&String, &String)| Package {
        name: k.clone(),
        version: v.clone(),
    };
    let installed = b
        .iter()
        .filter(|(k, _)| !a.contains_key(*k))
        .map(pkg)
        .collect();
    let removed = a
        .iter()
        .filter(|(k, _)| !b.contains_key(*k))
        .map(pkg)
        .collect();
    let upgraded = b
        .iter()
        .filter_map(|(k, v)| {
            let old = a.get(k)?;
            (old != v).then(|| Changed {
                name: k.clone(),
                from: old.clone(),
                to: v.clone(),
            })
        })
        .collect();
    (installed, removed, upgraded)
}

/// Names safe to put into an argument vector; others go to `not_reversible`.
fn safe<'p>(pkgs: &'p [Package], not: &mut Vec<String>) -> Vec<&'p Package> {
    pkgs.iter()
        .filter(|p| {
            let ok = !p.name.starts_with('-') && !p.name.is_empty();
            if !ok {
                not.push(format!(
                    "`{}`: a name starting with `-` would be read as an option; handle it by hand",
                    p.name
                ));
            }
            ok
        })
        .collect()
}

fn argv(program: &str, args: &[&str], names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = std::iter::once(program.to_string())
        .chain(args.iter().map(|s| s.to_string()))
        .collect();
    v.extend(names);
    v
}

/// The program a capture ran (its path as found on PATH), or `fallback`.
fn program(l: &PackageList, fallback: &str) -> String {
    l.command
        .first()
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| fallback.to_string())
}

/// apt, pip, npm, code and configured captures.
fn simple(name: &str, a: &PackageList, b: &PackageList) -> ManagerPlan {
    let mut m = unknown(name, String::new());
    m.status = "planned";
    m.reason = None;
    if a.sha256 == b.sha256 {
        return m;
    }
    let (installed, removed, upgraded) = canonical_delta(name, parse(a), parse(b));
    let mut not = Vec::new();
    let del = safe(&installed, &mut not);
    let add = safe(&removed, &mut not);
    let up_pkgs: Vec<Package> = upgraded
        .iter()
        .map(|c| Package {
            name: c.name.clone(),
            version: c.from.clone(),
        })
        .collect();
    let down = safe(&up_pkgs, &mut not);
    let names = |ps: &[&Package]| ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let mut cmds = Vec::new();
    match name {
        "apt" => {
            if !del.is_empty() {
                cmds.push(argv("apt-get", &["remove", "-y"], names(&del)));
            }
            if !add.is_empty() {
                cmds.push(argv("apt-get", &["install", "-y"], names(&add)));
            }
        }
        "pip" => {
            let pip = program(b, "pip");
            let pinned = |ps: &[&Package]| -> Vec<String> {
                ps.iter()
                    .map(|p| match p.version.as_str() {
                        "" => p.name.clone(),
                        // `pkg @ file:///…` installs from where it came from.
                        v if v.contains("://") => format!("{} @ {v}", p.name),
                        v => format!("{}=={v}", p.name),
                    })
                    .collect()
            };
            if !del.is_empty() {
                cmds.push(argv(&pip, &["uninstall", "-y"], names(&del)));
            }
            let mut again = pinned(&add);
            again.extend(pinned(&down));
            if !again.is_empty() {
                cmds.push(argv(&pip, &["install"], again));
            }
        }
        "npm" => {
            let npm = program(b, "npm");
            let at = |ps: &[&Package]| -> Vec<String> {
                ps.iter()
                    .map(|p| match p.version.as_str() {
                        "" => p.name.clone(),
                        v => format!("{}@{v}", p.name),
                    })
                    .collect()
            };
            if !del.is_empty() {
                cmds.push(argv(&npm, &["uninstall", "-g"], names(&del)));
            }
            let mut again = at(&add);
            again.extend(at(&down));
            if !again.is_empty() {
                cmds.push(argv(&npm, &["install", "-g"], again));
            }
        }
        "code" => {
            let code = program(b, "code");
            for p in &del {
                cmds.push(argv(&code, &["--uninstall-extension"], [p.name.clone()]));
            }
            for p in add.iter().chain(&down) {
                let id = match p.version.as_str() {
                    "" => p.name.clone(),
                    v => format!("{}@{v}", p.name),
                };
                cmds.push(argv(&code, &["--install-extension", "--force"], [id]));
            }
        }
        _ => {
            return unknown(
                name,
                format!("`{name}` is a configured capture; no reversal is known for it (only brew, apt, pip, npm and code are planned)"),
            )
        }
    }
    m.installed = installed;
    m.removed = removed;
    m.upgraded = upgraded;
    m.commands = cmds;
    m.not_reversible = not;
    m
}

/// brew: entries by kind from the Brewfile when it is known on both sides
/// (else the plain list, kinds unknown), versions from the plain list.
fn brew(
    t: &BTreeMap<&str, &PackageList>,
    n: &BTreeMap<&str, &PackageList>,
    paths: &PlanPaths,
) -> ManagerPlan {
    let file = known("brewfile", &paths.later, t, n);
    let list = known("brew", &paths.later, t, n);
    let (a, b) = match (&file, &list) {
        (Ok(f), _) => *f,
        (Err(_), Ok(l)) => *l,
        (Err(file_why), Err(list_why)) => {
            let has_list = t.contains_key("brew") || n.contains_key("brew");
            return unknown("brew", if has_list { list_why } else { file_why }.clone());
        }
    };
    let mut m = unknown("brew", String::new());
    m.status = "planned";
    m.reason = None;
    let from_file = file.is_ok();
    let (pa, pb) = (parse(a), parse(b));
    let (mut installed, mut removed, _) = delta(&pa, &pb);
    if from_file {
        // Brewfile values are options; the versions are `brew list`'s.
        let versions = |side: &BTreeMap<&str, &PackageList>| {
            side.get("brew")
                .filter(|l| l.is_known())
                .map(|l| parse(l))
                .unwrap_or_default()
        };
        for (pkgs, v) in [(&mut installed, versions(n)), (&mut removed, versions(t))] {
            for p in pkgs.iter_mut() {
                let bare = p.name.split_once(' ').map_or(p.name.as_str(), |x| x.1);
                p.version = v.get(bare).cloned().unwrap_or_default();
            }
        }
    }
    // Versions come from `brew list --versions` only (Brewfile values are options).
    let upgraded = match &list {
        Ok((la, lb)) => delta(&parse(la), &parse(lb)).2,
        Err(_) => Vec::new(),
    };
    let brew = program(b, "brew");
    let mut not = Vec::new();
    let del = safe(&installed, &mut not);
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &del {
        let (kind, bare) = if from_file {
            p.name.split_once(' ').unwrap_or(("brew", p.name.as_str()))
        } else {
            ("brew", p.name.as_str())
        };
        match kind {
            "brew" | "cask" | "tap" => by_kind.entry(kind).or_default().push(bare.to_string()),
            other => not.push(format!(
                "`{}`: Brewfile entries of kind `{other}` are not removed by the plan; remove it by hand",
                p.name
            )),
        }
    }
    for (kind, args) in [
        ("cask", &["uninstall", "--cask"][..]),
        ("brew", &["uninstall"][..]),
        ("tap", &["untap"][..]),
    ] {
        if let Some(names) = by_kind.remove(kind) {
            m.commands.push(argv(&brew, args, names));
        }
    }
    if !removed.is_empty() {
        match file.as_ref().ok().map(|(fa, _)| fa) {
            Some(fa) => {
                m.commands.push(argv(
                    &brew,
                    &["bundle", &format!("--file={}", paths.brewfile), "install"],
                    [],
                ));
                m.files.push(PlanFile {
                    path: paths.brewfile.clone(),
                    content: fa.output.clone(),
                });
            }
            None => {
                let add = safe(&removed, &mut not);
                if !add.is_empty() {
                    m.commands.push(argv(
                        &brew,
                        &["install"],
                        add.iter().map(|p| p.name.clone()),
                    ));
                }
            }
        }
    }
    for c in &upgraded {
        not.push(format!(
            "`{}` {} -> {}: Homebrew installs only the current version; it stays at {}",
            c.name, c.from, c.to, c.to
        ));
    }
    m.installed = installed;
    m.removed = removed;
    m.upgraded = upgraded;
    m.not_reversible = not;
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use proptest::prelude::*;

    fn list(name: &str, output: &str) -> PackageList {
        PackageList {
            name: name.into(),
            command: vec![format!("/usr/bin/{}", name.trim_end_matches("file"))],
            sha256: Hash::of(output.as_bytes()),
            bytes: output.len() as u64,
            output: output.into(),
            status: None,
        }
    }

    fn paths() -> PlanPaths {
        PlanPaths {
            brewfile: "/r/Brewfile".into(),
            later: "now".into(),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn brew_from_the_brewfile_by_kind_and_bundle_for_reinstalls() {
        let t = [
            list("brew", "git 2.43.0\nold 1.0\n"),
            list("brewfile", "tap \"a/b\"\nbrew \"git\"\nbrew \"old\"\n"),
        ];
        let n = [
            list("brew", "git 2.44.0\njq 1.7\nfzf 0.5\n"),
            list(
                "brewfile",
                "tap \"a/b\"\ntap \"x/y\"\nbrew \"git\"\nbrew \"jq\"\nbrew \"fzf\"\ncask \"iterm2\"\n",
            ),
        ];
        let p = plan(&t, &n, &paths());
        assert_eq!(p.status, "changes");
        assert_eq!(p.managers.len(), 1, "{p:#?}");
        let b = &p.managers[0];
        assert_eq!(b.name, "brew");
        assert_eq!(
            b.commands,
            vec![
                s(&["/usr/bin/brew", "uninstall", "--cask", "iterm2"]),
                s(&["/usr/bin/brew", "uninstall", "fzf", "jq"]),
                s(&["/usr/bin/brew", "untap", "x/y"]),
                s(&["/usr/bin/brew", "bundle", "--file=/r/Brewfile", "install"]),
            ]
        );
        assert_eq!(b.files[0].content, t[1].output);
        assert_eq!(b.upgraded[0].name, "git");
        assert!(b.not_reversible[0].contains("git"), "{b:#?}");
    }

    #[test]
    fn each_manager_reverses_with_its_own_commands() {
        let t = [
            list("apt", "curl\ngit\n"),
            list("pip", "requests==2.30.0\nsix==1.0\n"),
            list("npm", "/usr\n└── npm@10\n"),
            list("code", "a.b@1.0\n"),
        ];
        let n = [
            list("apt", "curl\nzsh\n"),
            list("pip", "requests==2.31.0\nsix==1.0\nblack==24.1\n"),
            list("npm", "/usr\n├── npm@10\n└── @s/t@2.0.0\n"),
            list("code", "a.b@1.1\nc.d@2.0\n"),
        ];
        let p = plan(&t, &n, &paths());
        let by: BTreeMap<&str, &ManagerPlan> =
            p.managers.iter().map(|m| (m.name.as_str(), m)).collect();
        assert_eq!(
            by["apt"].commands,
            vec![
                s(&["apt-get", "remove", "-y", "zsh"]),
                s(&["apt-get", "install", "-y", "git"])
            ]
        );
        assert_eq!(
            by["pip"].commands,
            vec![
                s(&["/usr/bin/pip", "uninstall", "-y", "black"]),
                s(&["/usr/bin/pip", "install", "requests==2.30.0"])
            ]
        );
        assert_eq!(
            by["npm"].commands,
            vec![s(&["/usr/bin/npm", "uninstall", "-g", "@s/t"])]
        );
        assert_eq!(
            by["code"].commands,
            vec![
                s(&["/usr/bin/code", "--uninstall-extension", "c.d"]),
                s(&["/usr/bin/code", "--install-extension", "--force", "a.b@1.0"])
            ]
        );
    }

    #[test]
    fn failed_or_absent_lists_are_unknown_never_empty() {
        let mut failed = list("apt", "");
        failed.status = Some("timeout".into());
        let ok = list("apt", "curl\ngit\n");
        for (t, n) in [
            (vec![ok.clone()], vec![failed.clone()]),
            (vec![failed.clone()], vec![ok.clone()]),
            (vec![], vec![ok.clone()]),
            (vec![ok.clone()], vec![]),
        ] {
            let p = plan(&t, &n, &paths());
            assert_eq!(p.status, "unknown", "{p:#?}");
            let m = &p.managers[0];
            assert_eq!(m.status, "unknown");
            assert!(m.commands.is_empty() && m.installed.is_empty() && m.removed.is_empty());
            assert!(m.reason.as_deref().unwrap().contains("unknown"), "{m:#?}");
        }
        let p = plan(
            std::slice::from_ref(&ok),
            std::slice::from_ref(&ok),
            &paths(),
        );
        assert_eq!(p.status, "nothing");
        assert!(p.managers.is_empty());
    }

    #[test]
    fn pip_and_code_names_compare_the_way_the_managers_do() {
        // Attack finding (session 6): `PyYAML` in the checkpoint and `pyyaml`
        // now (or `typing_extensions` / `typing-extensions`, or an extension id
        // in another case) are one package, never a removal plus an install.
        let a = list("pip", "PyYAML==6.0\ntyping_extensions==4.0\n");
        let b = list("pip", "pyyaml==6.0\ntyping-extensions==4.0\nrich==13.0\n");
        let p = plan(&[a], &[b], &paths());
        let m = p.managers.iter().find(|m| m.name == "pip").unwrap();
        assert_eq!(m.commands.len(), 1, "{:?}", m.commands);
        assert_eq!(m.commands[0][1..], s(&["uninstall", "-y", "rich"])[..]);
        assert_eq!(
            canonical_name("pip", "Zope.Interface__x"),
            "zope-interface-x"
        );
        let a = list("code", "ms-python.Python@1.0\n");
        let b = list("code", "ms-python.python@1.0\n");
        let p = plan(&[a], &[b], &paths());
        // Nothing to reverse: no command (a manager with nothing planned may be left out).
        assert!(
            p.managers
                .iter()
                .filter(|m| m.name == "code")
                .all(|m| m.commands.is_empty()),
            "{:?}",
            p.managers
        );
    }

    #[test]
    fn option_like_names_never_reach_a_command() {
        let t = [list("pip", "a==1\n")];
        let n = [list("pip", "a==1\n--index-url==x\n;rm -rf ~==1\n")];
        let p = plan(&t, &n, &paths());
        let m = &p.managers[0];
        assert_eq!(
            m.commands,
            vec![s(&["/usr/bin/pip", "uninstall", "-y", ";rm -rf ~"])]
        );
        assert!(m.not_reversible[0].contains("--index-url"));
    }

    #[test]
    fn a_checkpoint_from_before_the_brewfile_plans_from_brew_list() {
        // Older records have no `brewfile` list (and no `status` field: known).
        let t = [list("brew", "git 2.43.0\n")];
        let n = [
            list("brew", "git 2.43.0\njq 1.7\n"),
            list("brewfile", "brew \"git\"\nbrew \"jq\"\n"),
        ];
        let p = plan(&t, &n, &paths());
        assert_eq!(p.managers.len(), 1, "{p:#?}");
        let b = &p.managers[0];
        assert_eq!(b.status, "planned");
        assert_eq!(b.commands, vec![s(&["/usr/bin/brew", "uninstall", "jq"])]);
        let old: PackageList = serde_json::from_str(
            r#"{"name":"apt","command":["apt-mark"],"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","bytes":0,"output":""}"#,
        )
        .expect("a record without status reads");
        assert!(old.is_known());
    }

    #[test]
    fn configured_captures_are_unknown() {
        let p = plan(&[list("mine", "a\n")], &[list("mine", "b\n")], &paths());
        assert_eq!(p.managers[0].status, "unknown");
        assert!(p.managers[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("configured"));
    }

    fn names() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-c]{1,2}", "[0-2]", 0..6)
    }

    proptest! {
        /// Whatever the lists, no removal command names a package of the target.
        #[test]
        fn never_removes_what_the_target_has(a in names(), b in names(), mgr in 0usize..4) {
            let name = ["apt", "pip", "npm", "code"][mgr];
            let render = |m: &BTreeMap<String, String>| -> String {
                let mut out = String::from(if name == "npm" { "/usr\n" } else { "" });
                for (k, v) in m {
                    out.push_str(&match name {
                        "apt" => format!("{k}\n"),
                        "pip" => format!("{k}=={v}\n"),
                        "npm" => format!("├── {k}@{v}\n"),
                        _ => format!("{k}@{v}\n"),
                    });
                }
                out
            };
            let p = plan(&[list(name, &render(&a))], &[list(name, &render(&b))], &paths());
            for m in &p.managers {
                for c in &m.commands {
                    if c.iter().any(|x| x == "remove" || x == "uninstall" || x == "--uninstall-extension") {
                        for arg in &c[1..] {
                            prop_assert!(!a.contains_key(arg), "{c:?} removes {arg} of the target");
                        }
                    }
                }
                for i in &m.installed {
                    prop_assert!(!a.contains_key(&i.name));
                    prop_assert!(b.contains_key(&i.name));
                }
            }
        }
    }
}
