//! The crate's layers stay acyclic: no top-level module of `src/` imports, directly or
//! through others, a module that imports it back.
//!
//! The edges are read from the code itself: every `crate::name` path outside comments
//! (in `use` lines, grouped `use crate::{a, b::c}` lines and inline paths). The layers
//! this yields, bottom first, are written down in `docs/architecture.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src/");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_owned()),
        None => Some(first),
    }
}

/// The code of a line, without its `//` comment (a `//` inside a string is rare enough
/// in this crate's source to be ignored).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The top-level modules named by `crate::` paths in `text`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String = text.lines().map(code).collect::<Vec<_>>().join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // `stagecraft::`-style paths or identifiers ending in `crate` are not ours.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the names at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        if let Some(name) = ident_at(&group[j..]) {
                            found.insert(name.to_owned());
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else if let Some(name) = ident_at(rest) {
            found.insert(name.to_owned());
        }
    }
    found
}

/// The module import graph of `src/`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    // Only edges to modules of this crate (not `crate::Error`-style root re-exports).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|m| modules.contains(m));
    }
    graph
}

/// The cycles of `graph` (its strongly connected components of more than one module).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for (m, r) in &reaches {
        if !r.contains(*m) {
            continue;
        }
        let scc: BTreeSet<String> = r
            .iter()
            .filter(|n| reaches.get(n).is_some_and(|rn| rn.contains(*m)))
            .cloned()
            .collect();
        if !out.contains(&scc) {
            out.push(scc);
        }
    }
    out
}

/// The modules in layers, bottom first: each imports only modules of layers below.
fn layers(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while placed.len() < graph.len() {
        let layer: Vec<String> = graph
            .iter()
            .filter(|(m, deps)| !placed.contains(*m) && deps.iter().all(|d| placed.contains(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if layer.is_empty() {
            break;
        }
        placed.extend(layer.iter().cloned());
        out.push(layer);
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    assert!(graph.len() > 10, "read the modules of src/: {graph:?}");
    let found = cycles(&graph);
    let mut report = String::new();
    for scc in &found {
        report.push_str(&format!("\ncycle among {scc:?}:"));
        for m in scc {
            let back: Vec<_> = graph[m].iter().filter(|d| scc.contains(*d)).collect();
            report.push_str(&format!("\n  {m} imports {back:?}"));
        }
    }
    assert!(found.is_empty(), "import cycles in src/:{report}");
    for (i, layer) in layers(&graph).iter().enumerate() {
        println!("layer {i}: {}", layer.join(", "));
    }
}

/// The checker itself finds cycles, grouped imports and inline paths, and skips comments.
#[test]
fn the_checker_reads_paths_and_finds_cycles() {
    let text = "use crate::a::X;\nuse crate::{b, c::{D, E}, d::F};\n// crate::zz in a comment\n\
                fn f() { crate::e::g(); }\n/// [`x`](crate::doc_only)\nlet s = stagecraft::h;";
    let found = imports(text);
    assert_eq!(
        found,
        ["a", "b", "c", "d", "e"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, e)| (m.to_owned(), e.into_iter().map(String::from).collect()))
    .collect();
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0],
        ["a", "b", "c"].map(String::from).into_iter().collect()
    );
}
