//! One source for the bootstrap phase list: `repo::snapshot::PHASES`. Every
//! other place that spells the list out (the role's argument_specs, the Ansible
//! module's argument spec and its documentation, the role README,
//! `scripts/checkpoint-or-skip`, and `backup-checkpoint --help`) is read here
//! and must say the same phases in the same order, so adding or renaming a
//! phase fails until every copy follows.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dotfiles_backup::repo::snapshot::PHASES;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()))
}

/// Items of a bracketed list, unquoted, without the empty "no phase" choice.
fn items(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn phases() -> Vec<String> {
    PHASES.iter().map(|s| s.to_string()).collect()
}

/// Every `[...]` list after `opener` (`choices: [` in YAML, `choices=[` in Python).
fn bracket_lists(text: &str, opener: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(opener) {
        let after = &rest[i + opener.len()..];
        let end = after.find(']').expect("unclosed list");
        out.push(items(&after[..end]));
        rest = &after[end..];
    }
    out
}

/// A list that names any phase must name exactly all of them, in order.
fn assert_phase_lists(file: &Path, lists: Vec<Vec<String>>, at_least: usize) {
    let mut found = 0;
    for list in lists {
        if list.iter().any(|i| PHASES.contains(&i.as_str())) {
            assert_eq!(list, phases(), "{}: phase list differs", file.display());
            found += 1;
        }
    }
    assert!(
        found >= at_least,
        "{}: expected {at_least} phase list(s), found {found}",
        file.display()
    );
}

#[test]
fn the_roles_argument_specs_list_the_phases() {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root().join("roles"))
        .unwrap()
        .map(|e| e.unwrap().path().join("meta/argument_specs.yml"))
        .filter(|p| p.is_file())
        .collect();
    specs.sort();
    assert!(!specs.is_empty(), "no roles/*/meta/argument_specs.yml");
    let mut total = 0;
    for spec in specs {
        let rel = spec.strip_prefix(root()).unwrap().to_path_buf();
        let text = read(&rel);
        let lists = bracket_lists(&text, "choices: [");
        total += lists
            .iter()
            .filter(|l| l.iter().any(|i| PHASES.contains(&i.as_str())))
            .count();
        assert_phase_lists(&rel, lists, 0);
    }
    assert!(
        total >= 2,
        "the role's phase choices were not found ({total})"
    );
}

#[test]
fn the_ansible_module_spec_and_docs_list_the_phases() {
    let rel = Path::new("plugins/modules/checkpoint.py");
    let text = read(rel);
    assert_phase_lists(rel, bracket_lists(&text, "choices: ["), 1);
    assert_phase_lists(rel, bracket_lists(&text, "choices=["), 1);
}

#[test]
fn the_role_readme_lists_the_phases() {
    let rel = Path::new("roles/backup_checkpoint/README.md");
    let text = read(rel);
    let quoted: Vec<String> = PHASES.iter().map(|p| format!("`{p}`")).collect();
    let (last, rest) = quoted.split_last().unwrap();
    let sentence = format!("{} or {last}", rest.join(", "));
    assert!(
        text.contains(&sentence),
        "{}: no {sentence:?}",
        rel.display()
    );
}

#[test]
fn checkpoint_or_skip_takes_exactly_the_phases_as_auto() {
    let rel = Path::new("scripts/checkpoint-or-skip");
    let text = read(rel);
    let line = text
        .lines()
        .find(|l| l.trim_end().ends_with("mode=auto ;;"))
        .expect("the `PHASE|...) mode=auto ;;` case");
    let pattern = line.trim().split(')').next().unwrap();
    let listed: Vec<String> = pattern.split('|').map(str::to_string).collect();
    assert_eq!(listed, phases(), "{}: {line}", rel.display());
}

#[test]
fn backup_checkpoint_help_lists_the_phases() {
    let e = TestEnv::new();
    let help = |args: &[&str]| {
        let out = e.output("backup-checkpoint", args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.split_whitespace().collect::<Vec<_>>().join(" "), text)
    };
    let (flat, text) = help(&["--help"]);
    let spaced = format!("Phases: {}", PHASES.join(" "));
    assert!(flat.contains(&spaced), "no {spaced:?} in:\n{text}");
    let (flat, text) = help(&["auto", "--help"]);
    let (last, rest) = PHASES.split_last().unwrap();
    let sentence = format!("{} or {last}", rest.join(", "));
    assert!(flat.contains(&sentence), "no {sentence:?} in:\n{text}");
}
