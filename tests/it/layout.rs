//! The source layout's rules, checked on the source itself: dependencies between the crate's
//! top-level modules flow one way (no import cycles), and every file opens with a `//!` line
//! saying what it is for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to (`db` for `src/db/sqlite/read.rs`); `None` for the
/// crate root and the binary.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The top-level modules a file's code names as `crate::…` (comments and unit tests left out).
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .map(|line| line.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            // `crate::{a, b::c}`: the first segment of each path in the group.
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|path| path.trim().split("::").next().unwrap())
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            let name = &name[..end];
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_module_graph_has_no_cycles_and_every_file_says_what_it_is_for() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} does not open with a `//!` line saying what it is for",
            file.display()
        );
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        for used in uses(&text) {
            if used != module && modules.contains(&used) {
                let shown = file.strip_prefix(&src).unwrap().display().to_string();
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(used)
                    .or_default()
                    .insert(shown);
            }
        }
    }

    // Depth-first search; a back edge is a cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            let evidence: Vec<String> = cycle
                .windows(2)
                .map(|pair| {
                    format!(
                        "{} -> {} in {:?}",
                        pair[0], pair[1], graph[&pair[0]][&pair[1]]
                    )
                })
                .collect();
            panic!(
                "import cycle {}:\n  {}",
                cycle.join(" -> "),
                evidence.join("\n  ")
            );
        }
    }
}

#[test]
fn the_cycle_check_sees_crate_paths_and_groups() {
    let found = uses(
        "use crate::db::{Backend, within};\nuse crate::{error, source::Cell};\n// crate::model\nfn f() { crate::plan::x(); }\n#[cfg(test)]\nuse crate::run;",
    );
    let expected: BTreeSet<String> = ["db", "error", "source", "plan"].map(String::from).into();
    assert_eq!(found, expected);
}
