//! The effective configuration, key by key, with where each value came
//! from (`backup-create --print-config`).
//!
//! Every key [`crate::config::known_keys`] lists (read from the serde
//! definitions) is printed; a unit test fails when a key is added to the
//! config code without a value here. Sources, strongest first: a flag, an
//! environment variable, another file (the recipients file), the config
//! file, the built-in default.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::Result;
use crate::paths::display_path;
use crate::report::Envelope;

/// One key of the effective configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConfigItem {
    /// `section.key`.
    pub key: String,
    /// The value this run uses (paths `~`-relative under home; durations in
    /// the unit the key names).
    pub value: Value,
    /// `default`, `config PATH`, `env NAME`, `flag --NAME` or `file PATH`.
    pub source: String,
}

/// Every key with its effective value and source, sorted by key.
pub fn effective_config(s: &Settings) -> Vec<ConfigItem> {
    let mut items: Vec<ConfigItem> = values(s)
        .into_iter()
        .map(|(key, value)| ConfigItem {
            source: source_of(s, &key),
            key,
            value,
        })
        .collect();
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
}

/// Where `key`'s value came from.
fn source_of(s: &Settings, key: &str) -> String {
    // Some overrides are recorded for a whole group.
    let group = match key {
        "track.config" => Some("track"),
        "packages.auto" | "packages.manual" => Some("packages"),
        _ => None,
    };
    let recorded = s
        .sources
        .get(key)
        .or_else(|| group.and_then(|g| s.sources.get(g)));
    match recorded {
        Some(src) if src != "default" && !src.is_empty() => src.clone(),
        _ if s.file_keys.contains(key) => match &s.config_file {
            Some(p) => format!("config {}", display_path(p)),
            None => "default".into(),
        },
        _ => "default".into(),
    }
}

fn shown(p: &Path) -> Value {
    Value::String(display_path(p))
}

fn shown_opt(p: Option<&Path>) -> Value {
    p.map(shown).unwrap_or(Value::Null)
}

/// Each field of a serialized section as `section.field`.
fn section<T: Serialize>(name: &str, v: &T, out: &mut Vec<(String, Value)>) {
    if let Ok(Value::Object(map)) = serde_json::to_value(v) {
        out.extend(map.into_iter().map(|(k, v)| (format!("{name}.{k}"), v)));
    }
}

/// The effective value of every key.
fn values(s: &Settings) -> Vec<(String, Value)> {
    let t = &s.track_lists;
    let mut out: Vec<(String, Value)> = vec![
        ("general.disabled".into(), json!(s.disabled)),
        ("general.local_only".into(), json!(s.local_only)),
        ("repository.path".into(), shown(&s.repo)),
        (
            "repository.lock_wait_secs".into(),
            json!(s.lock_wait.as_secs_f64()),
        ),
        (
            "repository.verify_after_write".into(),
            json!(s.verify_after_write),
        ),
        ("track.config".into(), json!(t.config)),
        ("track.data".into(), json!(t.data)),
        ("track.exclude".into(), json!(t.exclude)),
        ("track.extra_exclude".into(), json!(t.extra_exclude)),
        (
            "track.ignore_file".into(),
            shown_opt(s.ignore_file.as_deref()),
        ),
        ("track.exclude_caches".into(), json!(s.exclude_caches)),
        ("track.max_file_size".into(), json!(s.max_file_size)),
        (
            "track.follow_links_into".into(),
            json!(s
                .follow_links_into
                .iter()
                .map(|p| display_path(p))
                .collect::<Vec<_>>()),
        ),
        ("classes.secret".into(), json!(s.secret_patterns)),
        ("classes.private".into(), json!(s.private_patterns)),
        ("classes.public".into(), json!(s.public_patterns)),
        ("safety.keep".into(), json!(s.safety_keep)),
        ("secrets.recipients".into(), json!(s.secrets.recipients)),
        (
            "secrets.recipients_file".into(),
            shown_opt(s.secrets.recipients_file.as_deref()),
        ),
        (
            "secrets.identity_file".into(),
            shown_opt(s.secrets.identity_file.as_deref()),
        ),
        (
            "external.targets".into(),
            Value::Object(
                s.external
                    .targets
                    .iter()
                    .map(|t| (t.name.clone(), json!(t.location.shown())))
                    .collect(),
            ),
        ),
        ("external.auto_sync".into(), json!(s.external.auto_sync)),
        (
            "external.timeout_secs".into(),
            json!(s.external.timeout.as_secs()),
        ),
        (
            "external.cache_dir".into(),
            shown_opt(s.external.cache_dir.as_deref()),
        ),
        ("retry.attempts".into(), json!(s.retry.attempts)),
        (
            "retry.base_delay_ms".into(),
            json!(s.retry.base_delay.as_millis() as u64),
        ),
        (
            "retry.max_delay_ms".into(),
            json!(s.retry.max_delay.as_millis() as u64),
        ),
    ];
    section("retention", &s.retention, &mut out);
    section("space", &s.space, &mut out);
    section("packages", &s.packages, &mut out);
    section("health", &s.health, &mut out);
    section("hooks", &s.hooks, &mut out);
    out
}

/// `backup-create --print-config`: the effective configuration in the
/// envelope (`config_file`, `config[]`); nothing else is read or written.
pub fn print_config(s: &Settings, env: &mut Envelope) -> Result<()> {
    env.changed = false;
    env.put("config_file", s.config_file.as_deref().map(display_path));
    env.put("config", effective_config(s));
    Ok(())
}

/// Human form: one `key = value  # source` line per key, grouped by section
/// like the file (TOML-ish, not meant to be pasted back as is: paths are shown `~`-relative).
pub fn human(env: &Envelope, _settings: &Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match env.extra.get("config_file").and_then(Value::as_str) {
        Some(p) => {
            let _ = writeln!(out, "# config file: {p}");
        }
        None => {
            let _ = writeln!(
                out,
                "# no config file: built-in defaults, environment and flags"
            );
        }
    }
    let mut last_section = "";
    for item in env
        .extra
        .get("config")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = item["key"].as_str().unwrap_or("?");
        let (sec, name) = key.split_once('.').unwrap_or(("", key));
        if sec != last_section {
            let _ = writeln!(out, "\n[{sec}]");
            last_section = sec;
        }
        let value = match &item["value"] {
            Value::Null => "(none)".to_string(),
            v => v.to_string(),
        };
        let _ = writeln!(
            out,
            "{name} = {value}  # {}",
            item["source"].as_str().unwrap_or("?")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{known_keys, Overrides};
    use std::collections::BTreeSet;

    fn resolve(pairs: &[(&str, &str)], over: &Overrides) -> Settings {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(over, &move |k: &str| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn every_key_the_config_code_accepts_is_printed() {
        let keys: BTreeSet<String> = known_keys().into_iter().collect();
        assert!(keys.len() > 40, "the probe found too few keys: {keys:?}");
        assert!(keys.contains("space.large_file_warn_mb"), "{keys:?}");
        let s = resolve(&[("HOME", "/h")], &Overrides::default());
        let printed: BTreeSet<String> = effective_config(&s).into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys.difference(&printed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "config keys without a value in --print-config (add them to effective::values)"
        );
        assert_eq!(
            printed.difference(&keys).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "--print-config prints keys the config file does not accept"
        );
    }

    #[test]
    fn sources_say_default_file_env_and_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[retention]\nkeep_last = 9\n[general]\nlocal_only = true\n",
        )
        .unwrap();
        let over = Overrides {
            wait_secs: Some(2.0),
            ..Overrides::default()
        };
        let s = resolve(
            &[
                ("HOME", "/h"),
                ("BACKUP_CONFIG", cfg.to_str().unwrap()),
                ("BACKUP_RETRIES", "4"),
            ],
            &over,
        );
        let items = effective_config(&s);
        let get = |k: &str| items.iter().find(|i| i.key == k).unwrap().clone();
        assert_eq!(get("retention.keep_last").value, json!(9));
        assert!(get("retention.keep_last").source.starts_with("config "));
        assert_eq!(get("general.local_only").value, json!(true));
        assert_eq!(get("retention.keep_daily").source, "default");
        assert_eq!(get("retry.attempts").source, "env BACKUP_RETRIES");
        assert_eq!(get("retry.attempts").value, json!(4));
        assert_eq!(get("repository.lock_wait_secs").source, "flag --wait");
        assert_eq!(get("repository.path").source, "default");
    }
}
