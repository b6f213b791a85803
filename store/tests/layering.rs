//! The store's layering, checked from its source: no module of a lower
//! layer refers to a higher one, and no files refer to each other in a
//! circle. Reads every `crate::` and `super::` path in `store/src` (inline
//! tests aside, which may use anything) and resolves it to the file that
//! defines the module. The layers are those `store/src/lib.rs` and
//! `docs/DESIGN.md` describe; a new top-level module must be given one here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may refer to its own
/// layer and those below.
const LAYERS: &[&[&str]] = &[
    &["error", "id", "os", "progress"],
    &["format"],
    &["backend"],
    &["keystore"],
    &["repository"],
    &["index"],
    &["ops"],
];

/// Within `ops`, shared modules every operation may use; operations may use
/// each other only where listed (an acyclic order, checked below too).
const OPS_SHARED: &[&str] = &["common", "walk"];

fn layer_of(module: &[String]) -> Option<usize> {
    let top = module.first().map(String::as_str).unwrap_or("lib");
    if top == "lib" {
        return Some(LAYERS.len());
    }
    LAYERS.iter().position(|layer| layer.contains(&top))
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `ops/restore/plan.rs` -> ["ops", "restore", "plan"]; `mod.rs` names its
/// folder; `lib.rs` is ["lib"].
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(source_root()).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    match last.as_str() {
        "mod.rs" => {}
        "lib.rs" if parts.is_empty() => parts.push("lib".into()),
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without comments and without its inline tests.
fn code_of(text: &str) -> String {
    let before_tests = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    before_tests
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in `code` that starts with `crate::` or `super::`, as its
/// segments, resolved against `module` (the file's own module path).
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            let preceded_by_ident = at > 0 && {
                let previous = bytes[at - 1];
                previous.is_ascii_alphanumeric() || previous == b'_' || previous == b':'
            };
            if preceded_by_ident {
                continue;
            }
            let rest = &code[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let mut segments: Vec<String> = rest[..end]
                .split("::")
                .filter(|segment| !segment.is_empty())
                .map(str::to_string)
                .collect();
            // A `{` right after the path: take every name in the braces.
            let braced = rest[end..].starts_with('{');
            let resolved_base = {
                let mut base: Vec<String> = Vec::new();
                // In `a/b.rs` and in `a/b/mod.rs` alike, the module is
                // `a::b` and `super` is `a`.
                let mut own = module.to_vec();
                own.pop();
                let mut iter = segments.drain(..).peekable();
                match iter.next().as_deref() {
                    Some("crate") => {}
                    Some("super") => {
                        base = own;
                        while iter.peek().map(String::as_str) == Some("super") {
                            iter.next();
                            base.pop();
                        }
                    }
                    _ => continue,
                }
                base.extend(iter);
                base
            };
            if braced {
                let close = rest[end..].find('}').unwrap_or(rest.len() - end);
                for item in rest[end + 1..end + close].split(',') {
                    let name = item.trim().split(" as ").next().unwrap_or("").trim();
                    if name.is_empty() {
                        continue;
                    }
                    let mut path = resolved_base.clone();
                    path.extend(name.split("::").map(str::to_string));
                    paths.push(path);
                }
            } else {
                paths.push(resolved_base);
            }
        }
    }
    paths
}

/// The longest prefix of `path` that names a module with its own file.
fn owning_module(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|length| path[..length].to_vec())
        .find(|prefix| modules.contains(prefix))
}

struct Graph {
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn build_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&source_root(), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|file| module_of(file)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).expect("readable source file");
        let mut targets = BTreeSet::new();
        for path in referenced_paths(&code_of(&text), &module) {
            if let Some(target) = owning_module(&path, &modules)
                && target != module
                // A module's own children (declared with `mod`) are its
                // business; parents re-exporting them is not an import.
                && !target.starts_with(&module)
            {
                targets.insert(target);
            }
        }
        edges.insert(module, targets);
    }
    Graph { edges }
}

fn show(module: &[String]) -> String {
    module.join("::")
}

#[test]
fn no_module_refers_to_a_higher_layer() {
    let graph = build_graph();
    let mut upward = Vec::new();
    for (from, targets) in &graph.edges {
        let from_layer = layer_of(from).unwrap_or_else(|| {
            panic!(
                "module {} is in no layer: add its top-level module to LAYERS",
                show(from)
            )
        });
        for to in targets {
            let to_layer = layer_of(to).expect("every target is a known module");
            if to_layer > from_layer {
                upward.push(format!("{} -> {}", show(from), show(to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "upward references:\n{}",
        upward.join("\n")
    );
}

#[test]
fn shared_modules_of_ops_use_no_operation() {
    let graph = build_graph();
    let mut wrong = Vec::new();
    for (from, targets) in &graph.edges {
        if from.first().map(String::as_str) != Some("ops") || from.len() < 2 {
            continue;
        }
        let from_op = &from[1];
        for to in targets {
            if to.first().map(String::as_str) == Some("ops") && to.len() >= 2 {
                let to_op = &to[1];
                if to_op != from_op
                    && OPS_SHARED.contains(&from_op.as_str())
                    && !OPS_SHARED.contains(&to_op.as_str())
                {
                    wrong.push(format!(
                        "shared module {} uses the operation {}",
                        show(from),
                        show(to)
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_files_refer_to_each_other_in_a_circle() {
    let graph = build_graph();
    // Tarjan's strongly connected components, iteratively small enough to
    // recurse: the store has well under a hundred files.
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g Vec<String>, usize>,
        low: BTreeMap<&'g Vec<String>, usize>,
        stack: Vec<&'g Vec<String>>,
        on_stack: BTreeSet<&'g Vec<String>>,
        next: usize,
        circles: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g Vec<String>) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for target in graph.edges.get(node).into_iter().flatten() {
            let Some((target, _)) = graph.edges.get_key_value(target) else {
                continue;
            };
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(show(member));
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.circles.push(component);
            }
        }
    }
    let mut state = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        circles: Vec::new(),
    };
    for node in graph.edges.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    let circles: Vec<String> = state
        .circles
        .iter()
        .map(|circle| circle.join(" <-> "))
        .collect();
    assert!(
        circles.is_empty(),
        "files that refer to each other in a circle:\n{}",
        circles.join("\n")
    );
}

/// The bodies of the types in `code` that derive `Serialize`, by name.
fn serialized_types(code: &str) -> Vec<(String, String)> {
    let mut types = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[derive(") {
        rest = &rest[at..];
        let derive_end = rest.find(")]").unwrap_or(rest.len());
        let serialized = rest[..derive_end].contains("Serialize");
        let Some(open) = rest.find('{') else { break };
        let head = &rest[derive_end..open];
        let name = head
            .split_whitespace()
            .skip_while(|word| *word != "struct" && *word != "enum")
            .nth(1)
            .unwrap_or("?")
            .to_string();
        // Find the matching close brace.
        let mut depth = 0usize;
        let mut close = open;
        for (offset, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + offset;
                        break;
                    }
                }
                _ => {}
            }
        }
        if serialized && !head.contains(';') {
            types.push((name, rest[open..=close].to_string()));
        }
        rest = &rest[close.max(open) + 1..];
    }
    types
}

#[test]
fn persisted_types_use_fixed_width_integers() {
    let mut files = Vec::new();
    rust_files(&source_root().join("format"), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source file");
        for (name, body) in serialized_types(&code_of(&text)) {
            for width in ["usize", "isize"] {
                if body
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|word| word == width)
                {
                    wrong.push(format!("{}: {name} has a {width}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "on-disk types must not depend on the platform's word size:\n{}",
        wrong.join("\n")
    );
    // The check sees what it is for.
    let example = "#[derive(Serialize)]\nstruct Bad { length: usize }";
    assert_eq!(serialized_types(example).len(), 1);
    assert!(serialized_types(example)[0].1.contains("usize"));
}

#[test]
fn the_checker_sees_references_and_resolves_super() {
    let module: Vec<String> = ["ops", "restore", "plan"].map(String::from).to_vec();
    let paths = referenced_paths(
        "use crate::format::{tree::Tree, manifest};\nuse super::write::Writer;\nlet x = crate::os::random::random_bytes();",
        &module,
    );
    let shown: Vec<String> = paths.iter().map(|path| show(path)).collect();
    assert!(
        shown.contains(&"format::tree::Tree".to_string()),
        "{shown:?}"
    );
    assert!(shown.contains(&"format::manifest".to_string()), "{shown:?}");
    assert!(
        shown.contains(&"ops::restore::write::Writer".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"os::random::random_bytes".to_string()),
        "{shown:?}"
    );
    assert!(code_of("a // crate::ops\n#[cfg(test)] crate::ops").trim() == "a");
}
