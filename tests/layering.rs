//! The layering rule of `ARCHITECTURE.md`, checked on the source: no circle of
//! imports among sibling modules anywhere under `src/` (a folder's `mod.rs` and
//! its children may use each other), and no file under `src/http/` over 600
//! lines.
//!
//! A module "uses" a sibling when it (or anything below it) names a path under
//! that sibling: `crate::a::…` or `super::…`. Text inside comments and string
//! literals is dropped first, so a doc line that mentions a module is no edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = entry.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/http/mod.rs` → `["http"]`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file
        .strip_prefix(src)
        .expect("under src/")
        .with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The code with comments and string/char literals blanked out.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every module path `code` names, resolved from module `at`.
fn references(at: &ModPath, code: &str) -> Vec<ModPath> {
    let mut refs = Vec::new();
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.contains("::"))
        .collect();
    for w in words {
        let segs: Vec<&str> = w.split("::").filter(|s| !s.is_empty()).collect();
        match segs.first() {
            Some(&"crate") => refs.push(segs[1..].iter().map(|s| s.to_string()).collect()),
            Some(&"super") => {
                let mut base = at.clone();
                let mut rest = &segs[..];
                while rest.first() == Some(&"super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().map(|s| s.to_string()));
                refs.push(base);
            }
            _ => {}
        }
    }
    refs
}

type Graph = BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>>;

/// Every circle of uses among the children of one parent, as "a -> b -> a".
fn find_circles(graph: &Graph) -> Vec<String> {
    let mut circles = Vec::new();
    for (parent, g) in graph {
        // Depth-first search for a path back to the start.
        for start in g.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            while let Some((node, trail)) = stack.pop() {
                for next in g.get(&node).into_iter().flatten() {
                    if next == start {
                        let mut c = trail.clone();
                        c.push(start.clone());
                        circles.push(format!("in {:?}: {}", parent, c.join(" -> ")));
                    } else if !trail.contains(next) {
                        let mut t = trail.clone();
                        t.push(next.clone());
                        stack.push((next.clone(), t));
                    }
                }
            }
        }
    }
    circles
}

#[test]
fn no_import_circle_among_sibling_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<ModPath, String> = files
        .iter()
        .map(|f| {
            (
                module_of(&src, f),
                std::fs::read_to_string(f).expect("readable"),
            )
        })
        .filter(|(m, _)| !(m.len() == 1 && (m[0] == "lib" || m[0] == "main")))
        .collect();
    let is_module = |prefix: &[String]| modules.keys().any(|k| k.starts_with(prefix));
    // parent -> (child -> siblings it uses)
    let mut graph: Graph = BTreeMap::new();
    for (path, text) in &modules {
        for r in references(path, &code_only(text)) {
            let common = path.iter().zip(&r).take_while(|(a, b)| a == b).count();
            if common >= path.len() || common >= r.len() {
                continue; // an ancestor or a descendant: allowed
            }
            let parent = path[..common].to_vec();
            let (from, to) = (path[common].clone(), r[common].clone());
            let mut sibling = parent.clone();
            sibling.push(to.clone());
            if is_module(&sibling) {
                graph
                    .entry(parent)
                    .or_default()
                    .entry(from)
                    .or_default()
                    .insert(to);
            }
        }
    }
    let circles = find_circles(&graph);
    assert!(
        graph.get(&Vec::new()).is_some_and(|g| g.len() > 10),
        "the checker found almost no edges: it is not reading the sources"
    );
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_http_file_is_over_600_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() > 3, "src/http holds the handlers");
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > 600).then(|| format!("{} has {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    // Negative control: two sibling modules naming each other form a circle.
    let a = references(
        &vec!["a".into()],
        &code_only("use crate::b::x; // crate::c"),
    );
    assert_eq!(a, vec![vec!["b".to_string(), "x".to_string()]]);
    let s = references(
        &vec!["http".into(), "users".into()],
        "use super::request::read;",
    );
    let edge = |g: &mut Graph, from: &str, to: &str| {
        g.entry(vec!["http".to_string()])
            .or_default()
            .entry(from.into())
            .or_default()
            .insert(to.into());
    };
    let mut g: Graph = BTreeMap::new();
    edge(&mut g, "users", "emails");
    edge(&mut g, "emails", "request");
    assert!(find_circles(&g).is_empty());
    edge(&mut g, "request", "users");
    assert!(
        !find_circles(&g).is_empty(),
        "users -> emails -> request -> users"
    );
    assert_eq!(
        s,
        vec![vec!["http", "request", "read"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()]
    );
}
