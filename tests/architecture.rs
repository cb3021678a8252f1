//! The library's layers point one way and no modules import each other in a
//! circle. The layer table lives in docs/architecture.md (read from there, so
//! the doc and the rule cannot drift); this file parses every source file in
//! `src/` with `syn`, resolves each `crate::`/`super::`/`self::` path (use
//! trees, code paths, macro tokens, attribute strings, local `use` names and
//! `pub use` re-exports) to the module it names, and checks the edges.
//!
//! The checker is a plain function over (module path, source text) pairs, so
//! the synthetic cases at the bottom prove it fails on the shapes it exists to
//! catch (a back edge, a peer cycle, a cycle hidden behind `super::`, a group,
//! a macro, a re-export).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// One source file: its module path (`["ops", "list"]`, `[]` for lib.rs) and text.
struct Source {
    module: Vec<String>,
    file: String,
    text: String,
}

/// A path as written: the module it was written in, and its segments.
type Written = (Vec<String>, Vec<String>);

/// A path as written, before resolution: where it was written and its segments.
struct RawRef {
    module: Vec<String>,
    segs: Vec<String>,
    at: String,
}

/// What the first pass collects from every file.
#[derive(Default)]
struct Collected {
    /// Every module (files and inline `mod x { … }`).
    modules: BTreeSet<Vec<String>>,
    /// Paths that may name a crate module.
    refs: Vec<RawRef>,
    /// `use a::b as c;` in module M: (M, c) -> a::b as written (resolved later).
    aliases: BTreeMap<(Vec<String>, String), Written>,
    /// `use a::*;` in module M: M -> [a as written].
    globs: BTreeMap<Vec<String>, Vec<Vec<String>>>,
    /// `pub use a::b as c;` in module M: M::c -> a::b as written (with M).
    reexports: BTreeMap<Vec<String>, Written>,
    /// Violations found while reading (glob re-exports, unparsable files).
    problems: Vec<String>,
}

struct Reader<'a> {
    file: &'a str,
    module: Vec<String>,
    out: &'a mut Collected,
}

fn line_of(span: proc_macro2::Span) -> usize {
    span.start().line
}

impl Reader<'_> {
    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.file)
    }

    fn push_ref(&mut self, segs: Vec<String>, line: usize) {
        if segs.is_empty() {
            return;
        }
        let at = self.at(line);
        self.out.refs.push(RawRef {
            module: self.module.clone(),
            segs,
            at,
        });
    }

    /// Flatten a use tree into leaves: every leaf is a reference, an alias in
    /// this module, and (for `pub use`) a re-export.
    fn use_tree(&mut self, prefix: &[String], tree: &syn::UseTree, public: bool, line: usize) {
        let mut path = prefix.to_vec();
        match tree {
            syn::UseTree::Path(p) => {
                path.push(p.ident.to_string());
                self.use_tree(&path, &p.tree, public, line);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, public, line);
                }
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let (full, local) = if name == "self" {
                    let local = prefix.last().cloned().unwrap_or_default();
                    (prefix.to_vec(), local)
                } else {
                    path.push(name.clone());
                    (path, name)
                };
                self.leaf(full, local, public, line);
            }
            syn::UseTree::Rename(r) => {
                let name = r.ident.to_string();
                if name != "self" {
                    path.push(name);
                }
                self.leaf(path, r.rename.to_string(), public, line);
            }
            syn::UseTree::Glob(_) => {
                if public {
                    let at = self.at(line);
                    self.out.problems.push(format!(
                        "{at}: `pub use {}::*` re-exports by glob; name what you re-export",
                        prefix.join("::")
                    ));
                }
                self.out
                    .globs
                    .entry(self.module.clone())
                    .or_default()
                    .push(prefix.to_vec());
                self.push_ref(prefix.to_vec(), line);
            }
        }
    }

    fn leaf(&mut self, full: Vec<String>, local: String, public: bool, line: usize) {
        if local != "_" {
            self.out.aliases.insert(
                (self.module.clone(), local.clone()),
                (self.module.clone(), full.clone()),
            );
            if public {
                let mut key = self.module.clone();
                key.push(local);
                self.out
                    .reexports
                    .insert(key, (self.module.clone(), full.clone()));
            }
        }
        self.push_ref(full, line);
    }

    /// Paths inside token streams: `a::b::c` runs (with `$crate`), and string
    /// literals that read as `crate::…`/`super::…`/`self::…` paths.
    fn tokens(&mut self, tokens: TokenStream, strings: bool) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream(), strings),
                TokenTree::Literal(l) if strings => {
                    let text = l.to_string();
                    let inner = text.trim_matches('"');
                    if ["crate::", "super::", "self::"]
                        .iter()
                        .any(|p| inner.starts_with(p))
                    {
                        let segs = inner.split("::").map(str::to_string).collect();
                        self.push_ref(segs, line_of(l.span()));
                    }
                }
                TokenTree::Ident(id) => {
                    let dollar =
                        i > 0 && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                    let mut segs = vec![if dollar {
                        format!("${id}")
                    } else {
                        id.to_string()
                    }];
                    let mut j = i + 1;
                    while j + 2 < trees.len() && is_colons(&trees[j], &trees[j + 1]) {
                        match &trees[j + 2] {
                            TokenTree::Ident(next) => segs.push(next.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    if segs.len() > 1 {
                        self.push_ref(segs, line_of(id.span()));
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn is_colons(a: &TokenTree, b: &TokenTree) -> bool {
    matches!((a, b), (TokenTree::Punct(x), TokenTree::Punct(y)) if x.as_char() == ':' && y.as_char() == ':')
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        self.out.modules.insert(self.module.clone());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let public = !matches!(u.vis, syn::Visibility::Inherited);
        let line = line_of(u.use_token.span);
        self.use_tree(&[], &u.tree, public, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.len() > 1 {
            let segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = p
                .segments
                .first()
                .map(|s| line_of(s.ident.span()))
                .unwrap_or(0);
            self.push_ref(segs, line);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone(), false);
        syn::visit::visit_macro(self, m);
    }

    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        // Doc comments are prose (intra-doc links are not dependencies).
        if a.path().is_ident("doc") {
            return;
        }
        if let syn::Meta::List(list) = &a.meta {
            self.tokens(list.tokens.clone(), true);
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                let v = s.value();
                if v.starts_with("crate::") || v.starts_with("super::") {
                    let segs = v.split("::").map(str::to_string).collect();
                    self.push_ref(segs, line_of(s.span()));
                }
            }
        }
    }
}

/// Module path of a file under src/: `ops/list.rs` -> ops::list, `repo/mod.rs` -> repo.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Every .rs file under `src/` except the binaries.
fn crate_sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root.join("src")).unwrap().to_path_buf();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(Source {
                    module: module_of(&rel),
                    file: format!("src/{}", rel.display()),
                    text: std::fs::read_to_string(&path).unwrap(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// The layer table between the markers in docs/architecture.md: module -> layer number.
fn parse_layers(doc: &str) -> BTreeMap<String, u32> {
    let begin = doc
        .find("<!-- layers:begin -->")
        .expect("layers:begin marker");
    let end = doc.find("<!-- layers:end -->").expect("layers:end marker");
    let mut layers = BTreeMap::new();
    for line in doc[begin..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let Ok(n) = cells[1].parse::<u32>() else {
            continue;
        };
        for m in cells[2].split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let old = layers.insert(m.to_string(), n);
            assert!(old.is_none(), "{m} is in two layers of the table");
        }
    }
    assert!(!layers.is_empty(), "no rows in the layer table");
    layers
}

/// Resolve a path written in `module` to an absolute path inside the crate,
/// following local `use` names, globs and `pub use` re-exports. `None` for a
/// path outside the crate (std, a dependency, a local item or variable).
fn resolve(c: &Collected, module: &[String], segs: &[String], depth: u32) -> Option<Vec<String>> {
    if depth > 16 || segs.is_empty() {
        return None;
    }
    let mut abs: Vec<String> = match segs[0].as_str() {
        "crate" | "$crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => {
            let mut m = module.to_vec();
            let mut i = 0;
            while segs.get(i).map(String::as_str) == Some("super") {
                m.pop()?;
                i += 1;
            }
            m.extend(segs[i..].iter().cloned());
            return Some(reexported(c, m, depth));
        }
        first => {
            let target = local_name(c, module, first, depth + 1)?;
            let mut base = resolve(c, &target.0, &target.1, depth + 1)?;
            base.extend(segs[1..].iter().cloned());
            return Some(reexported(c, base, depth));
        }
    };
    abs.extend(segs[1..].iter().cloned());
    Some(reexported(c, abs, depth))
}

/// What a bare first segment means in `module`: a `use` there, a child module,
/// or a name brought in by one of its glob imports.
fn local_name(
    c: &Collected,
    module: &[String],
    name: &str,
    depth: u32,
) -> Option<(Vec<String>, Vec<String>)> {
    if let Some(t) = c.aliases.get(&(module.to_vec(), name.to_string())) {
        return Some(t.clone());
    }
    let mut child = module.to_vec();
    child.push(name.to_string());
    if c.modules.contains(&child) {
        return Some((
            Vec::new(),
            std::iter::once("crate".to_string()).chain(child).collect(),
        ));
    }
    for glob in c.globs.get(module).into_iter().flatten() {
        let Some(g) = resolve(c, module, glob, depth + 1) else {
            continue;
        };
        if g.as_slice() == module {
            continue;
        }
        let mut seg = vec!["crate".to_string()];
        seg.extend(g.iter().cloned());
        seg.push(name.to_string());
        let mut as_module = g.clone();
        as_module.push(name.to_string());
        if c.modules.contains(&as_module) || c.aliases.contains_key(&(g.clone(), name.to_string()))
        {
            return Some((Vec::new(), seg));
        }
    }
    None
}

/// Follow `pub use` re-exports: `repo::SUBDIRS` -> `repo::layout::SUBDIRS`.
fn reexported(c: &Collected, path: Vec<String>, depth: u32) -> Vec<String> {
    for n in (1..=path.len()).rev() {
        if let Some((m, target)) = c.reexports.get(&path[..n]) {
            if let Some(mut t) = resolve(c, m, target, depth + 1) {
                t.extend(path[n..].iter().cloned());
                return t;
            }
        }
    }
    path
}

/// The module an absolute path names: its longest prefix that is a module.
fn module_part(c: &Collected, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| p.is_empty() || c.modules.contains(p))
        .unwrap_or_default()
}

/// Every resolved edge: (from module, to module, where), both full module paths.
fn edges(sources: &[Source], c: &mut Collected) -> Vec<(Vec<String>, Vec<String>, String)> {
    for s in sources {
        c.modules.insert(s.module.clone());
    }
    for s in sources {
        match syn::parse_file(&s.text) {
            Ok(file) => {
                let mut r = Reader {
                    file: &s.file,
                    module: s.module.clone(),
                    out: c,
                };
                r.visit_file(&file);
            }
            Err(e) => c.problems.push(format!("{}: does not parse: {e}", s.file)),
        }
    }
    let mut out = Vec::new();
    for r in &c.refs {
        // A path through a re-exporting module depends on that module too.
        let literal = match r.segs[0].as_str() {
            "crate" | "$crate" | "self" | "super" => {
                let c2 = Collected {
                    modules: c.modules.clone(),
                    ..Default::default()
                };
                resolve(&c2, &r.module, &r.segs, 0)
            }
            _ => None,
        };
        for target in [literal, resolve(c, &r.module, &r.segs, 0)]
            .into_iter()
            .flatten()
        {
            let to = module_part(c, &target);
            out.push((r.module.clone(), to, r.at.clone()));
        }
    }
    out
}

/// A cycle in `graph`, if any, as the list of its nodes.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn dfs<N: Ord + Clone>(
        n: &N,
        g: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, u8>,
        path: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        state.insert(n.clone(), 1);
        path.push(n.clone());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = dfs(m, g, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = dfs(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Every violation of the layer table and the no-cycle rule, as messages.
fn check(sources: &[Source], layers: &BTreeMap<String, u32>) -> Vec<String> {
    let mut c = Collected::default();
    let edges = edges(sources, &mut c);
    let mut problems = std::mem::take(&mut c.problems);

    let tops: BTreeSet<String> = c
        .modules
        .iter()
        .filter_map(|m| m.first().cloned())
        .collect();
    for t in &tops {
        if !layers.contains_key(t) {
            problems.push(format!(
                "module `{t}` is in no layer of docs/architecture.md"
            ));
        }
    }
    for m in layers.keys() {
        if !tops.contains(m) {
            problems.push(format!(
                "docs/architecture.md names `{m}`, which is not a module"
            ));
        }
    }

    let mut top_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sub_graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut where_: BTreeMap<(String, String), String> = BTreeMap::new();
    for (from, to, at) in &edges {
        let (Some(f), Some(t)) = (from.first(), to.first()) else {
            continue;
        };
        if f != t {
            if let (Some(lf), Some(lt)) = (layers.get(f), layers.get(t)) {
                if lt < lf {
                    problems.push(format!(
                        "{at}: `{}` (layer {lf}) uses `{}` (layer {lt}), a layer above it",
                        from.join("::"),
                        to.join("::")
                    ));
                }
            }
            top_graph.entry(f.clone()).or_default().insert(t.clone());
            where_
                .entry((f.clone(), t.clone()))
                .or_insert_with(|| at.clone());
        } else if from.len() >= 2 && to.len() >= 2 && from[1] != to[1] {
            let (a, b) = (from[..2].to_vec(), to[..2].to_vec());
            where_
                .entry((a.join("::"), b.join("::")))
                .or_insert_with(|| at.clone());
            sub_graph.entry(a).or_default().insert(b);
        }
    }
    if let Some(cycle) = find_cycle(&top_graph) {
        problems.push(cycle_message(&cycle, &where_));
    }
    if let Some(cycle) = find_cycle(&sub_graph) {
        let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        problems.push(cycle_message(&names, &where_));
    }
    // A path seen both as written and through a re-export reports once.
    problems.dedup();
    problems
}

fn cycle_message(cycle: &[String], where_: &BTreeMap<(String, String), String>) -> String {
    let steps: Vec<String> = cycle
        .windows(2)
        .map(|w| {
            let at = where_
                .get(&(w[0].clone(), w[1].clone()))
                .map(String::as_str)
                .unwrap_or("?");
            format!("{} -> {} ({at})", w[0], w[1])
        })
        .collect();
    format!("import cycle: {}", steps.join(", "))
}

#[test]
fn the_crate_follows_its_layers_and_has_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let layers = parse_layers(&doc);
    let sources = crate_sources(root);
    assert!(sources.len() > 20, "read only {} files", sources.len());
    let problems = check(&sources, &layers);
    assert!(
        problems.is_empty(),
        "against docs/architecture.md:\n{}",
        problems.join("\n")
    );
}

// ---- the checker on synthetic crates: each shape it must catch ----

const LAYERS: &str = "<!-- layers:begin -->
| Layer | Modules | |
|---|---|---|
| 1 | ops | |
| 2 | repo, scan | |
| 3 | config | |
<!-- layers:end -->";

fn crate_of(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(rel, text)| Source {
            module: module_of(Path::new(rel)),
            file: format!("src/{rel}"),
            text: text.to_string(),
        })
        .collect()
}

fn problems_in(files: &[(&str, &str)]) -> Vec<String> {
    check(&crate_of(files), &parse_layers(LAYERS))
}

const BASE: [(&str, &str); 7] = [
    (
        "lib.rs",
        "pub mod ops; pub mod repo; pub mod scan; pub mod config;",
    ),
    ("ops/mod.rs", "pub mod list; pub mod prune;"),
    (
        "ops/list.rs",
        "use crate::repo::Repository; pub fn select() {}",
    ),
    ("ops/prune.rs", "pub fn size() {}"),
    (
        "repo/mod.rs",
        "use crate::config::Settings; pub struct Repository;",
    ),
    ("scan.rs", "use crate::repo::Repository; pub fn scan() {}"),
    ("config.rs", "pub struct Settings; pub const MAX: u64 = 1;"),
];

fn with(extra: &[(&str, &str)]) -> Vec<String> {
    let mut files: BTreeMap<&str, &str> = BASE.iter().copied().collect();
    for (k, v) in extra {
        files.insert(k, v);
    }
    problems_in(&files.into_iter().collect::<Vec<_>>())
}

fn assert_caught(extra: &[(&str, &str)], needle: &str) {
    let p = with(extra);
    assert!(
        p.iter().any(|m| m.contains(needle)),
        "expected a problem containing {needle:?}, got {p:#?}"
    );
}

#[test]
fn a_clean_synthetic_crate_passes() {
    assert_eq!(with(&[]), Vec::<String>::new());
}

#[test]
fn a_back_edge_in_a_use_line_fails() {
    assert_caught(
        &[(
            "config.rs",
            "use crate::ops::prune::size; pub struct Settings;",
        )],
        "`config` (layer 3) uses `ops::prune` (layer 1)",
    );
}

#[test]
fn a_back_edge_in_a_grouped_use_tree_fails() {
    assert_caught(
        &[(
            "config.rs",
            "use crate::{hash, ops::{list::{self}, prune as p}}; pub struct Settings;",
        )],
        "uses `ops::list`",
    );
}

#[test]
fn a_back_edge_as_a_full_path_in_code_fails() {
    assert_caught(
        &[(
            "config.rs",
            "pub struct Settings; fn f() -> u64 { let _ = crate::ops::prune::size(); 1 }",
        )],
        "uses `ops::prune`",
    );
}

#[test]
fn a_back_edge_inside_a_macro_fails() {
    assert_caught(
        &[(
            "config.rs",
            "pub struct Settings; fn f() { println!(\"{:?}\", crate::ops::prune::size()); }",
        )],
        "uses `ops::prune`",
    );
    assert_caught(
        &[(
            "config.rs",
            "pub struct Settings; macro_rules! m { () => { $crate::ops::list::select() } }",
        )],
        "uses `ops::list`",
    );
}

#[test]
fn a_back_edge_in_an_attribute_string_fails() {
    assert_caught(
        &[(
            "config.rs",
            "#[derive(serde::Serialize)] pub struct Settings { #[serde(serialize_with = \"crate::ops::prune::size\")] a: u8 }",
        )],
        "uses `ops::prune`",
    );
}

#[test]
fn a_back_edge_through_a_local_use_name_or_a_test_module_fails() {
    assert_caught(
        &[(
            "config.rs",
            "use crate::ops; pub struct Settings; fn f() { ops::prune::size(); }",
        )],
        "uses `ops::prune`",
    );
    assert_caught(
        &[(
            "config.rs",
            "pub struct Settings; #[cfg(test)] mod tests { use super::super::ops::list; }",
        )],
        "`config::tests` (layer 3) uses `ops::list`",
    );
}

#[test]
fn a_back_edge_hidden_behind_a_pub_use_reexport_fails() {
    // repo re-exports a config item: using it through repo is an edge to both.
    // And config reaching ops through a name that repo re-exports from ops.
    assert_caught(
        &[
            (
                "repo/mod.rs",
                "pub use crate::ops::prune::size; pub struct Repository;",
            ),
            ("config.rs", "pub struct Settings;"),
        ],
        "`repo` (layer 2) uses `ops::prune`",
    );
    assert_caught(
        &[
            (
                "ops/mod.rs",
                "pub mod list; pub mod prune; pub use self::prune::size;",
            ),
            (
                "config.rs",
                "pub struct Settings; fn f() { crate::ops::size(); }",
            ),
        ],
        "`config` (layer 3) uses `ops::prune`",
    );
}

#[test]
fn doc_comments_and_string_literals_are_not_edges() {
    assert_eq!(
        with(&[(
            "config.rs",
            "//! See [`crate::ops::prune`].\n/// Like `crate::ops::list::select`.\npub struct Settings; const S: &str = \"crate::ops::prune\";",
        )]),
        Vec::<String>::new()
    );
}

#[test]
fn a_cycle_between_peers_of_one_layer_fails() {
    assert_caught(
        &[(
            "repo/mod.rs",
            "use crate::scan::scan; pub struct Repository;",
        )],
        "import cycle: ",
    );
}

#[test]
fn a_cycle_between_submodules_through_super_fails() {
    let p = with(&[
        ("ops/list.rs", "use super::prune::size; pub fn select() {}"),
        ("ops/prune.rs", "pub fn size() { super::list::select() }"),
    ]);
    assert!(
        p.iter()
            .any(|m| m.contains("import cycle") && m.contains("ops::list -> ops::prune")),
        "{p:#?}"
    );
}

#[test]
fn a_cycle_through_a_glob_import_of_the_parent_fails() {
    let p = with(&[
        (
            "ops/list.rs",
            "use super::*; pub fn select() { prune::size() }",
        ),
        (
            "ops/prune.rs",
            "use super::list; pub fn size() { list::select() }",
        ),
    ]);
    assert!(p.iter().any(|m| m.contains("import cycle")), "{p:#?}");
}

#[test]
fn a_glob_reexport_and_an_unplaced_module_fail() {
    assert_caught(
        &[(
            "repo/mod.rs",
            "pub use crate::config::*; pub struct Repository;",
        )],
        "re-exports by glob",
    );
    assert_caught(
        &[
            (
                "lib.rs",
                "pub mod ops; pub mod repo; pub mod scan; pub mod config; pub mod extra;",
            ),
            ("extra.rs", ""),
        ],
        "module `extra` is in no layer",
    );
}
