//! Credentials recognised by content, for files the path patterns miss.
//!
//! Real `~/.config` directories hold keys and tokens under names no pattern
//! list can foresee (`~/.ssh/github`, a token exported in `~/.zshrc`). Every
//! file that a checkpoint reads anyway and that is at most
//! [`MAX_DETECT_BYTES`] long is matched against the rules below *before* its
//! bytes can reach a plain-text pack; a match makes it secret-class for this
//! run (encrypted, or skipped with `secret_skipped`). Files taken from the
//! files cache are not read and so not checked: a file cannot start holding
//! a credential without its size, mtime or ctime changing.
//!
//! The rules look for shapes that essentially never occur by accident
//! (armoured private-key headers, prefixed token formats) plus one generic
//! rule restricted to `.env` and `*rc` files, where `NAME_TOKEN=value` lines
//! are the usual way credentials are kept. `docs/secrets.md` lists them.

use std::sync::LazyLock;

use regex::bytes::{Regex, RegexSet};

/// Larger files are not checked (credentials are small; the fast path stays cheap).
pub const MAX_DETECT_BYTES: usize = 64 << 10;

/// The rules, by name (`docs/secrets.md` documents each), in match priority order.
const RULES: &[(&str, &str)] = &[
    (
        "openssh-private-key",
        r"-----BEGIN OPENSSH PRIVATE KEY-----",
    ),
    ("pgp-private-key", r"-----BEGIN PGP PRIVATE KEY BLOCK-----"),
    (
        "pem-private-key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    ),
    ("putty-private-key", r"(?m)^PuTTY-User-Key-File-[23]: "),
    ("age-secret-key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    (
        "aws-access-key",
        r"(?:^|[^A-Z0-9])(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{16}(?:$|[^A-Z0-9])",
    ),
    (
        "github-token",
        r"(?:^|[^A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})",
    ),
    (
        "gitlab-token",
        r"(?:^|[^A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20,}",
    ),
    (
        "slack-token",
        r"(?:^|[^A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}",
    ),
    ("npm-token", r"(?:^|[^A-Za-z0-9_])npm_[A-Za-z0-9]{36}"),
    (
        "stripe-key",
        r"(?:^|[^A-Za-z0-9_])(?:sk|rk)_live_[A-Za-z0-9]{20,}",
    ),
    (
        "openai-or-anthropic-key",
        r"(?:^|[^A-Za-z0-9_-])sk-(?:proj|ant|svcacct|admin)-[A-Za-z0-9_-]{20,}",
    ),
    (
        "npm-auth-token",
        r#"(?m)_(?:authToken|auth|password)\s*=\s*["']?[^\s"'$<{][^\s"']{7,}"#,
    ),
];

/// Literals one of which every rule in [`RULES`] needs: a SIMD substring
/// search (about 3 GB/s) rules out almost every file before the rule set
/// runs (about 0.2 GB/s, half a first snapshot's hashing time on its own).
const NEEDLES: &[&str] = &[
    "-----BEGIN ",
    "PuTTY-User-Key-File-",
    "AGE-SECRET-KEY-1",
    "AKIA",
    "ASIA",
    "AROA",
    "AIDA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxa-",
    "xoxb-",
    "xoxp-",
    "xoxo-",
    "xoxs-",
    "xoxr-",
    "npm_",
    "_auth",
    "_password",
    "_live_",
    "sk-proj-",
    "sk-ant-",
    "sk-svcacct-",
    "sk-admin-",
];

/// `scheme://user:password@host` with a literal password (git remotes,
/// `DATABASE_URL`, pip's `index-url`), in any file; checked only when `://`
/// and `@` both occur, and the password is put through [`placeholder`].
static URL_CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@\x22']+:([^\s/@\x22']{3,})@[A-Za-z0-9\[]")
        .expect("the URL rule is valid")
});

/// Words the assignment rule needs (any case).
const WORDS: &[&str] = &["pass", "secret", "token", "key"];

/// `a|b|…` of escaped literals, `(?i-u)` for any ASCII case.
fn literals(words: &[&str], any_case: bool) -> Regex {
    let alternation: Vec<String> = words.iter().map(|w| regex::escape(w)).collect();
    let flags = if any_case { "(?i-u)" } else { "(?-u)" };
    Regex::new(&format!("{flags}{}", alternation.join("|"))).expect("literals are valid")
}

static NEEDLE: LazyLock<Regex> = LazyLock::new(|| literals(NEEDLES, false));

static WORD: LazyLock<Regex> = LazyLock::new(|| literals(WORDS, true));

static SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(RULES.iter().map(|(_, re)| *re)).expect("the detection rules are valid")
});

/// `NAME=value` where the name ends in a credential word (also fish's
/// `set -gx NAME value`); for `.env`/`*rc`/shell start-up files only.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?mi)^[ \t]*(?:export[ \t]+|set[ \t]+|setenv[ \t]+)?[A-Za-z0-9_.-]*(?:password|passwd|_pass|secret|token|api_?key|access_?key|private_?key|client_?secret)(?:[ \t]*[=:]|[ \t]*\+=)[ \t]*["']?([^\s"'#]{8,})|^[ \t]*(?:password|passwd)[ \t]+["']?([^\s"'#]{8,})|^[ \t]*set[ \t]+(?:-[A-Za-z]+[ \t]+)+[A-Za-z0-9_]*(?:password|passwd|_pass|secret|token|api_?key|access_?key)[ \t]+["']?([^\s"'#]{8,})"#,
    )
    .expect("the assignment rule is valid")
});

/// The name of the rule `data` matches, if any. `name` is the file's base
/// name (the generic assignment rule applies to `.env` and `*rc` files only).
pub fn detect(name: &[u8], data: &[u8]) -> Option<&'static str> {
    if data.len() > MAX_DETECT_BYTES {
        return None;
    }
    if NEEDLE.is_match(data) {
        if let Some(i) = SET.matches(data).into_iter().next() {
            return Some(RULES[i].0);
        }
    }
    if memchr::memmem::find(data, b"://").is_some() && memchr::memchr(b'@', data).is_some() {
        let literal = |c: regex::bytes::Captures<'_>| !placeholder(&c[1]);
        if URL_CREDENTIAL.captures_iter(data).any(literal) {
            return Some("url-credentials");
        }
    }
    if env_or_rc(name) && WORD.is_match(data) {
        for caps in ASSIGNMENT.captures_iter(data) {
            let value = caps
                .get(1)
                .or_else(|| caps.get(2))
                .or_else(|| caps.get(3))
                .map_or(&b""[..], |m| m.as_bytes());
            if !value.is_empty() && !placeholder(value) {
                return Some("password-or-token-assignment");
            }
        }
    }
    None
}

/// `.env`, `.env.local`, `prod.env`, `.bashrc`, `.npmrc`, `zshrc`, and the
/// shell start-up files that are not `*rc` (`.profile`, `.zshenv`,
/// `.bash_profile`, `config.fish`, `*.sh`, `*.zsh`): where exported
/// credentials live. YAML, JSON and TOML files are left to the token shapes
/// above: `token:` keys there are too often not secrets, and a false match
/// costs a skipped file when no recipient is configured.
fn env_or_rc(name: &[u8]) -> bool {
    const SHELL_FILES: &[&[u8]] = &[
        b".zshenv",
        b".zlogin",
        b".bash_login",
        b".bash_aliases",
        b".exports",
        b".extra",
        b"config.fish",
    ];
    name == b".env"
        || name.starts_with(b".env.")
        || name.ends_with(b".env")
        || (name.ends_with(b"rc") && name.len() > 2)
        || name.ends_with(b"profile")
        || name.ends_with(b".sh")
        || name.ends_with(b".zsh")
        || name.ends_with(b".fish")
        || SHELL_FILES.contains(&name)
}

/// A value that refers to a credential kept elsewhere, or a template.
fn placeholder(value: &[u8]) -> bool {
    let first = value[0];
    matches!(first, b'$' | b'<' | b'{' | b'%' | b'`' | b'(' | b'[')
        || value.iter().all(|&b| b == value[0])
        || value.eq_ignore_ascii_case(b"changeme")
        || value.windows(4).any(|w| w.eq_ignore_ascii_case(b"xxxx"))
        || value.len() >= 9 && {
            let lower = value.to_ascii_lowercase();
            lower.starts_with(b"your") || lower.starts_with(b"example") || lower.ends_with(b"here")
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_recognises_its_shape() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (b"github", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n", "openssh-private-key"),
            (b"k.asc", b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQ\n", "pgp-private-key"),
            (b"x", b"-----BEGIN RSA PRIVATE KEY-----\nMII\n", "pem-private-key"),
            (b"x", b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMII\n", "pem-private-key"),
            (b"x", b"-----BEGIN PRIVATE KEY-----\nMII\n", "pem-private-key"),
            (b"id.ppk", b"PuTTY-User-Key-File-3: ssh-ed25519\n", "putty-private-key"),
            (b"key.txt", b"# created\nAGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n", "age-secret-key"),
            (b"c.ini", b"aws_access_key_id = AKIAQWERTYUIOPASDFGH\n", "aws-access-key"),
            (b"hosts", b"oauth_token: ghp_0123456789abcdefghijABCDEFGHIJ012345\n", "github-token"),
            (b"x.json", b"{\"t\":\"github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV\"}", "github-token"),
            (b"x", b"token glpat-abcdefghij0123456789\n", "gitlab-token"),
            (b"slack.json", b"{\"token\": \"xoxb-123456789012-abcdefABCDEF\"}", "slack-token"),
            (b"x", b"NPM=npm_0123456789abcdefghijABCDEFGHIJ012345\n", "npm-token"),
            (b".npmrc", b"//registry.npmjs.org/:_authToken=9f8e7d6c-5b4a\n", "npm-auth-token"),
            (b".env", b"DEBUG=1\nDATABASE_PASSWORD=s3cr3t-v4lue\n", "password-or-token-assignment"),
            (b".zshrc", b"export HOMEBREW_GITHUB_API_TOKEN=0123abcd4567\n", "password-or-token-assignment"),
            (b".pypirc", b"[pypi]\npassword = pypi-AgEIcHlwaS5vcmc\n", "password-or-token-assignment"),
            (b".muttrc", b"set imap_user = me\nset imap_pass = \"hunter2hunter2\"\n", "password-or-token-assignment"),
            (b".msmtprc", b"account default\nuser me\npassword   s3cr3t-value\n", "password-or-token-assignment"),
            (b".zshenv", b"export OPENAI_KEY_FILE=/dev/null\nexport DB_PASSWORD=hunter2hunter2\n", "password-or-token-assignment"),
            (b".bash_profile", b"export MY_API_TOKEN=hunter2hunter2\n", "password-or-token-assignment"),
            (b"config.fish", b"set -gx GITLAB_TOKEN abcdefgh12345678\n", "password-or-token-assignment"),
            (b"settings.json", b"{\"key\": \"sk_live_4eC39HqLyjWDarjtT1zdp7dc\"}", "stripe-key"),
            (b".zprofile", b"export OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx\n", "openai-or-anthropic-key"),
            (b".gitconfig", b"[url \"https://me:s3cr3tpass@github.com/\"]\n\tinsteadOf = https://github.com/\n", "url-credentials"),
            (b"pip.conf", b"[global]\nindex-url = https://user:p4ssw0rd@pypi.example.com/simple\n", "url-credentials"),
            (b".env", b"DATABASE_URL=postgres://app:Tr0ub4dor@db:5432/app\n", "url-credentials"),
        ];
        for (name, data, rule) in cases {
            assert_eq!(
                detect(name, data),
                Some(*rule),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn ordinary_dotfiles_are_not_flagged() {
        let cases: &[(&[u8], &[u8])] = &[
            (b".zshrc", b"export PASSWORD_STORE_DIR=~/.password-store\nexport GPG_TTY=$(tty)\nalias k=kubectl\n"),
            (b".bashrc", b"export GITHUB_TOKEN=$(pass show github)\nexport NPM_TOKEN=\"${NPM_TOKEN}\"\n"),
            (b".env", b"API_KEY=<your key here>\nSECRET=changeme\nTOKEN=xxxxxxxx\n"),
            (b".env.example", b"DB_PASSWORD=your_password_here\n"),
            (b"init.lua", b"local token = 'abcdefghijklmnop'\n"),
            (b".bashrc", b"pass generate email/github 20\nalias bypass=true\nCOMPASS_DIR=/opt/compass\n"),
            (b".msmtprc", b"passwordeval \"pass show mail\"\n"),
            (b"id_ed25519.pub", b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test\n"),
            (b"notes.md", b"-----BEGIN PUBLIC KEY-----\nMFkw\n-----BEGIN CERTIFICATE-----\n"),
            (b"x", b"see AKIAIOSFODNN7EXAMPLEX for the format\n"),
            (b".gitconfig", b"[credential]\n\thelper = store\n"),
            (b".gitconfig", b"[remote]\n\turl = ssh://git@github.com:22/me/repo.git\n"),
            (b".zprofile", b"export PATH=$HOME/bin:$PATH\nexport PGPASSFILE=$HOME/.pgpass\n"),
            (b".env", b"DATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app\n"),
            (b"README", b"mailto:me@example.com https://example.com/a@b\n"),
            (b"task.sh", b"echo sk-test; OPENAI_API_KEY=$(pass show openai)\n"),
        ];
        for (name, data) in cases {
            assert_eq!(
                detect(name, data),
                None,
                "{}: {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn every_rule_needs_one_of_the_needles() {
        // Each rule's shortest example must pass the literal prefilter.
        for (rule, _) in RULES {
            let example: &[u8] = match *rule {
                "openssh-private-key" => b"-----BEGIN OPENSSH PRIVATE KEY-----",
                "pgp-private-key" => b"-----BEGIN PGP PRIVATE KEY BLOCK-----",
                "pem-private-key" => b"-----BEGIN EC PRIVATE KEY-----",
                "putty-private-key" => b"PuTTY-User-Key-File-2: ssh-rsa",
                "age-secret-key" => {
                    b"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
                }
                "aws-access-key" => b"ASIAQWERTYUIOPASDFGH",
                "github-token" => b"ghs_0123456789abcdefghijABCDEFGHIJ012345",
                "gitlab-token" => b"glpat-abcdefghij0123456789",
                "slack-token" => b"xoxp-1234567890-abc",
                "npm-token" => b"npm_0123456789abcdefghijABCDEFGHIJ012345",
                "npm-auth-token" => b"_password=c2VjcmV0cGFzcw==",
                "stripe-key" => b"rk_live_0123456789abcdefghij",
                "openai-or-anthropic-key" => b"sk-ant-0123456789abcdefghij",
                other => panic!("no example for rule {other}"),
            };
            assert_eq!(detect(b"x", example), Some(*rule));
        }
    }

    #[test]
    fn large_files_are_not_checked() {
        let mut data = b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec();
        data.resize(MAX_DETECT_BYTES + 1, b'a');
        assert_eq!(detect(b"big", &data), None);
    }
}
