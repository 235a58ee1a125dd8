//! No import cycle between the modules of any crate of the workspace
//! (issue 21).
//!
//! For every crate of the workspace (the members of the root Cargo.toml and
//! the root package: each library, `src/main.rs` and `src/bin/*.rs`), this
//! parses the module tree from its `mod` declarations (files, directory
//! modules and inline modules) and every reference a module makes to
//! another: `use crate::…` and `use super::…` trees (groups included),
//! `crate::a::b` and `super::x` paths anywhere in the code, also inside
//! macro calls such as `format!`. Code under `#[cfg(test)]` does not count:
//! tests may reach anything.
//!
//! A reference from module `a::b::c` to `a::d::e` is an edge between the
//! siblings under their common parent: `a::b -> a::d`. A module using its
//! parent (`super::Context`) or a parent using its child (`pub use
//! child::X`) is structure, not an edge. At every level of the tree the
//! siblings must form a DAG; each cycle found is printed as a path
//! (`action -> run -> action`) with the file and reference behind each
//! edge.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

type ModPath = Vec<String>;

/// One crate's module tree and the sibling edges between its modules, with
/// the first place each edge was seen (file:line).
#[derive(Default)]
struct CrateGraph {
    modules: BTreeSet<ModPath>,
    edges: BTreeMap<(ModPath, ModPath), String>,
}

/// A reference found in a module: its path segments (starting with `crate`,
/// `super` or `self`) and the line it is on.
struct Reference {
    segments: Vec<String>,
    /// The reference as written (`crate::run::describe`), to find it.
    text: String,
}

struct Module {
    path: ModPath,
    file: PathBuf,
    references: Vec<Reference>,
    /// The names its `use` items bring in, with the paths they stand for:
    /// a reference through `crate::m::Name` reaches what `Name` names.
    uses: Vec<(String, Vec<String>)>,
}

/// `module::name` brought in by a `use`: the module it leads to, and
/// whether it names that module itself (else an item in it).
type Aliases = BTreeMap<ModPath, (ModPath, bool)>;

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .meta
                .require_list()
                .is_ok_and(|list| list.tokens.to_string().trim() == "test")
    })
}

/// Collects the references of one module's items and the modules it
/// declares (`mod x;` and inline `mod x { … }`).
struct Collector {
    references: Vec<Reference>,
    uses: Vec<(String, Vec<String>)>,
    children: Vec<syn::ItemMod>,
}

impl Collector {
    fn push(&mut self, segments: Vec<String>) {
        if matches!(
            segments.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) {
            let text = segments.join("::");
            self.references.push(Reference { segments, text });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut segments = prefix.clone();
                let name = name.ident.to_string();
                if name == "self" {
                    // `use crate::a::{self}` names `a`.
                    if let Some(last) = prefix.last() {
                        self.uses.push((last.clone(), prefix.clone()));
                    }
                } else {
                    segments.push(name.clone());
                    self.uses.push((name, segments.clone()));
                }
                self.push(segments);
            }
            syn::UseTree::Rename(rename) => {
                let mut segments = prefix.clone();
                segments.push(rename.ident.to_string());
                self.uses
                    .push((rename.rename.to_string(), segments.clone()));
                self.push(segments);
            }
            syn::UseTree::Glob(_) => self.push(prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// `crate :: a :: b` and `super :: x` sequences in a macro's tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut index = 0;
        while index < trees.len() {
            match &trees[index] {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Ident(ident) if ident == "crate" || ident == "super" => {
                    let mut segments = vec![ident.to_string()];
                    let mut next = index + 1;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (trees.get(next), trees.get(next + 1))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        match trees.get(next + 2) {
                            Some(TokenTree::Ident(segment)) => segments.push(segment.to_string()),
                            _ => break,
                        }
                        next += 3;
                    }
                    self.push(segments);
                    index = next;
                    continue;
                }
                _ => {}
            }
            index += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Const(item) => &item.attrs,
            syn::Item::Enum(item) => &item.attrs,
            syn::Item::Fn(item) => &item.attrs,
            syn::Item::Impl(item) => &item.attrs,
            syn::Item::Macro(item) => &item.attrs,
            syn::Item::Mod(item) => &item.attrs,
            syn::Item::Static(item) => &item.attrs,
            syn::Item::Struct(item) => &item.attrs,
            syn::Item::Trait(item) => &item.attrs,
            syn::Item::Type(item) => &item.attrs,
            syn::Item::Use(item) => &item.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Mod(module) = item {
            self.children.push(module.clone());
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Const(item) => &item.attrs,
            syn::ImplItem::Fn(item) => &item.attrs,
            syn::ImplItem::Type(item) => &item.attrs,
            _ => return syn::visit::visit_impl_item(self, item),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.push(segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }
}

/// Reads a crate's module tree from its root file, following `mod`
/// declarations (skipping `#[cfg(test)]` ones).
fn read_crate(root_file: &Path) -> Vec<Module> {
    let mut modules = Vec::new();
    let text = std::fs::read_to_string(root_file)
        .unwrap_or_else(|error| panic!("{}: {error}", root_file.display()));
    let file = syn::parse_file(&text)
        .unwrap_or_else(|error| panic!("{}: cannot parse: {error}", root_file.display()));
    let dir = root_file.parent().unwrap();
    read_module(&Vec::new(), root_file, dir, &file.items, &mut modules);
    modules
}

/// `dir` is where this module's `mod x;` children live.
fn read_module(
    path: &ModPath,
    file: &Path,
    dir: &Path,
    items: &[syn::Item],
    modules: &mut Vec<Module>,
) {
    let mut collector = Collector {
        references: Vec::new(),
        uses: Vec::new(),
        children: Vec::new(),
    };
    for item in items {
        collector.visit_item(item);
    }
    let children = std::mem::take(&mut collector.children);
    modules.push(Module {
        path: path.clone(),
        file: file.to_path_buf(),
        references: collector.references,
        uses: collector.uses,
    });
    for child in children {
        let name = child.ident.to_string();
        let mut child_path = path.clone();
        child_path.push(name.clone());
        match &child.content {
            Some((_, items)) => read_module(&child_path, file, &dir.join(&name), items, modules),
            None => {
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(&name).join("mod.rs");
                let child_file = if flat.is_file() { flat } else { nested };
                let text = std::fs::read_to_string(&child_file).unwrap_or_else(|error| {
                    panic!(
                        "{}: module {name}: {}: {error}",
                        file.display(),
                        child_file.display()
                    )
                });
                let parsed = syn::parse_file(&text).unwrap_or_else(|error| {
                    panic!("{}: cannot parse: {error}", child_file.display())
                });
                read_module(
                    &child_path,
                    &child_file,
                    &dir.join(&name),
                    &parsed.items,
                    modules,
                );
            }
        }
    }
}

fn graph_of(root_file: &Path, workspace: &Path) -> CrateGraph {
    let modules = read_crate(root_file);
    let mut graph = CrateGraph {
        modules: modules.iter().map(|module| module.path.clone()).collect(),
        edges: BTreeMap::new(),
    };
    // What each `use` brings in, resolved through the others (a re-export
    // of a re-export) until nothing changes.
    let mut aliases = Aliases::new();
    loop {
        let mut next = Aliases::new();
        for module in &modules {
            for (name, segments) in &module.uses {
                if let Some(resolved) = resolve(&graph.modules, &aliases, &module.path, segments) {
                    let mut alias = module.path.clone();
                    alias.push(name.clone());
                    if !graph.modules.contains(&alias) {
                        next.insert(alias, resolved);
                    }
                }
            }
        }
        if next == aliases {
            break;
        }
        aliases = next;
    }
    for module in &modules {
        for reference in &module.references {
            let Some((target, _)) =
                resolve(&graph.modules, &aliases, &module.path, &reference.segments)
            else {
                continue;
            };
            let from = &module.path;
            let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == target.len() {
                continue; // a parent and its descendant: structure
            }
            let edge = (from[..=common].to_vec(), target[..=common].to_vec());
            let file = module.file.strip_prefix(workspace).unwrap_or(&module.file);
            graph
                .edges
                .entry(edge)
                .or_insert_with(|| format!("{} ({})", file.display(), reference.text));
        }
    }
    graph
}

/// The deepest module a reference names (`crate::a::b::Item` -> `a::b`),
/// through the names `use` items brought in, and whether the reference
/// names that module itself.
fn resolve(
    modules: &BTreeSet<ModPath>,
    aliases: &Aliases,
    from: &ModPath,
    segments: &[String],
) -> Option<(ModPath, bool)> {
    let mut base: ModPath;
    let mut rest = segments;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &rest[1..];
        }
        Some("self") => {
            base = from.clone();
            rest = &rest[1..];
        }
        Some("super") => {
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A path relative to the module (`pub use child::Item;`).
            base = from.clone();
            base.push(first.to_owned());
            let known = modules.contains(&base) || aliases.contains_key(&base);
            base.pop();
            if !known {
                return None; // another crate's
            }
        }
        None => return None,
    }
    for segment in rest {
        base.push(segment.clone());
        if modules.contains(&base) {
            continue;
        }
        match aliases.get(&base) {
            Some((target, true)) => base = target.clone(),
            Some((target, false)) => return Some((target.clone(), false)),
            None => {
                base.pop();
                return Some((base, false));
            }
        }
    }
    Some((base, true))
}

fn name(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &CrateGraph) -> Vec<Vec<ModPath>> {
    let nodes: Vec<&ModPath> = graph.modules.iter().collect();
    let index_of: BTreeMap<&ModPath, usize> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (*node, index))
        .collect();
    let mut successors = vec![Vec::new(); nodes.len()];
    for (from, to) in graph.edges.keys() {
        successors[index_of[from]].push(index_of[to]);
    }
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn connect(node: usize, successors: &[Vec<usize>], state: &mut State) {
        state.index[node] = Some(state.next);
        state.low[node] = state.next;
        state.next += 1;
        state.stack.push(node);
        state.on_stack[node] = true;
        for &next in &successors[node] {
            match state.index[next] {
                None => {
                    connect(next, successors, state);
                    state.low[node] = state.low[node].min(state.low[next]);
                }
                Some(index) if state.on_stack[next] => {
                    state.low[node] = state.low[node].min(index);
                }
                Some(_) => {}
            }
        }
        if Some(state.low[node]) == state.index[node] {
            let mut component = Vec::new();
            loop {
                let member = state.stack.pop().unwrap();
                state.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort_unstable();
                state.components.push(component);
            }
        }
    }
    let mut state = State {
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in 0..nodes.len() {
        if state.index[node].is_none() {
            connect(node, &successors, &mut state);
        }
    }
    state
        .components
        .into_iter()
        .map(|component| {
            component
                .into_iter()
                .map(|index| nodes[index].clone())
                .collect()
        })
        .collect()
}

/// For every edge inside a component, the shortest cycle through it, each
/// printed once, as `a -> b -> a` with where each edge comes from.
fn describe(graph: &CrateGraph, component: &[ModPath]) -> Vec<String> {
    let members: BTreeSet<&ModPath> = component.iter().collect();
    let inner: Vec<(&ModPath, &ModPath)> = graph
        .edges
        .keys()
        .filter(|(from, to)| members.contains(from) && members.contains(to))
        .map(|(from, to)| (from, to))
        .collect();
    let mut seen = BTreeSet::new();
    let mut lines = Vec::new();
    for &(from, to) in &inner {
        // Shortest path to -> … -> from inside the component.
        let mut previous: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = VecDeque::from([to]);
        let mut reached = to == from;
        while let Some(node) = queue.pop_front() {
            if node == from {
                reached = true;
                break;
            }
            for &(a, b) in &inner {
                if a == node && b != to && !previous.contains_key(b) {
                    previous.insert(b, a);
                    queue.push_back(b);
                }
            }
        }
        assert!(
            reached,
            "an edge of a strongly connected component closes a cycle"
        );
        let mut path = vec![from];
        let mut node = from;
        while node != to {
            node = previous[node];
            path.push(node);
        }
        path.reverse(); // to … from
        path.insert(0, from); // from -> to … from
        let start = (0..path.len() - 1)
            .min_by_key(|&index| path[index])
            .unwrap();
        let rotated: Vec<&ModPath> = path[start..path.len() - 1]
            .iter()
            .chain(&path[..=start])
            .copied()
            .collect();
        if !seen.insert(rotated.clone()) {
            continue;
        }
        let mut line = rotated
            .iter()
            .map(|m| name(m))
            .collect::<Vec<_>>()
            .join(" -> ");
        line.push_str("   (");
        let steps: Vec<String> = rotated
            .windows(2)
            .map(|pair| {
                let at = &graph.edges[&(pair[0].clone(), pair[1].clone())];
                format!("{} -> {}: {at}", name(pair[0]), name(pair[1]))
            })
            .collect();
        line.push_str(&steps.join("; "));
        line.push(')');
        lines.push(line);
    }
    lines
}

/// The crate root files of the workspace: every member's (and the root
/// package's) src/lib.rs, src/main.rs and src/bin/*.rs.
fn crate_roots(workspace: &Path) -> Vec<PathBuf> {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap()).unwrap();
    let mut packages = Vec::new();
    if manifest.contains_key("package") {
        packages.push(workspace.to_path_buf());
    }
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members");
    for member in members {
        let member = member.as_str().unwrap();
        match member.strip_suffix("/*") {
            Some(parent) => {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace.join(parent))
                    .unwrap()
                    .map(|entry| entry.unwrap().path())
                    .filter(|path| path.join("Cargo.toml").is_file())
                    .collect();
                dirs.sort();
                packages.extend(dirs);
            }
            None => packages.push(workspace.join(member)),
        }
    }
    let mut roots = Vec::new();
    for package in packages {
        let src = package.join("src");
        for file in ["lib.rs", "main.rs"] {
            if src.join(file).is_file() {
                roots.push(src.join(file));
            }
        }
        if let Ok(entries) = std::fs::read_dir(src.join("bin")) {
            let mut bins: Vec<PathBuf> = entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
                .collect();
            bins.sort();
            roots.extend(bins);
        }
    }
    roots
}

fn report(roots: &[PathBuf], workspace: &Path) -> (usize, String) {
    let mut found = 0;
    let mut out = String::new();
    for root in roots {
        let graph = graph_of(root, workspace);
        for component in cycles(&graph) {
            let shown = root.strip_prefix(workspace).unwrap_or(root);
            let names: Vec<String> = component.iter().map(name).collect();
            found += 1;
            writeln!(
                out,
                "{}: import cycle among {}:",
                shown.display(),
                names.join(", ")
            )
            .unwrap();
            for line in describe(&graph, &component) {
                writeln!(out, "  {line}").unwrap();
            }
        }
    }
    (found, out)
}

#[test]
fn no_import_cycle_in_any_crate_of_the_workspace() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let roots = crate_roots(workspace);
    assert!(
        roots.iter().any(|root| root.ends_with("engine/src/lib.rs")),
        "the workspace's crates were not found: {roots:?}"
    );
    let (found, out) = report(&roots, workspace);
    assert!(
        found == 0,
        "{found} import cycle(s) between modules (docs/internals.md):\n{out}"
    );
}

/// The checker itself: it sees cycles through `use` groups, directory
/// modules, `super::` from a submodule, paths inside macros and names
/// re-exported (`pub use`), and ignores parent/child references and
/// `#[cfg(test)]` code.
#[test]
fn the_checker_finds_cycles_through_every_kind_of_reference() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("exec")).unwrap();
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).unwrap();
    write(
        "lib.rs",
        "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\npub mod exec;\npub mod f;\n\
         pub use exec::action as act;\npub use e::Thing;\n",
    );
    // a -> b through a use group; b -> a inside a macro.
    write("a.rs", "use crate::{b, c};\npub fn f() { b::g(); }\n");
    write(
        "b.rs",
        "pub fn g() { let _ = format!(\"{}\", crate::a::f as usize); }\n",
    );
    // c -> d only in test code: no edge.
    write("c.rs", "#[cfg(test)]\nmod tests { use crate::d; }\n");
    // exec::action -> exec::run through a path, exec::run -> exec::action
    // through super::; the parent/child references are structure.
    write(
        "exec/mod.rs",
        "pub mod action;\npub mod run;\npub use action::Act;\n",
    );
    write(
        "exec/action.rs",
        "use super::Act as _;\npub struct Act;\nfn x() { crate::exec::run::go(); }\n",
    );
    write(
        "exec/run.rs",
        "pub fn go() { super::action::Act; crate::d::h(); let _ = crate::Thing; }\n",
    );
    // d -> exec (a child of exec) and exec -> d (from exec::run).
    write("d.rs", "pub fn h() { crate::exec::action::Act; }\n");
    // exec -> f through the root's re-export of e's re-export of f::Thing;
    // f -> exec through the root's alias of exec::action.
    write("e.rs", "pub use crate::f::Thing;\n");
    write(
        "f.rs",
        "pub struct Thing;\nfn y() { let _ = crate::act::Act; }\n",
    );
    let (found, out) = report(&[src.join("lib.rs")], dir.path());
    assert_eq!(found, 3, "{out}");
    assert!(out.contains("among a, b:"), "{out}");
    assert!(out.contains("a -> b -> a"), "{out}");
    assert!(out.contains("a -> b: src/a.rs (crate::b)"), "{out}");
    assert!(out.contains("among d, exec, f:"), "{out}");
    assert!(out.contains("d -> exec -> d"), "{out}");
    assert!(
        out.contains("exec -> f: src/exec/run.rs (crate::Thing)"),
        "{out}"
    );
    assert!(
        out.contains("f -> exec: src/f.rs (crate::act::Act)"),
        "{out}"
    );
    assert!(
        out.contains("exec::action -> exec::run -> exec::action"),
        "{out}"
    );
    assert!(!out.contains("src/c.rs"), "{out}");
}
