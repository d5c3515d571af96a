//! The layers of `docs/architecture.md` held to the code: every crate's
//! `[dependencies]` on another crate of tre must be in its row of the
//! table "what each may import", and only crates of rows above its own, so
//! that no import circle can form. The job runtime, say, may import the
//! clock but never the domain or the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

/// The table's rows in order: a crate and the crates it may import.
fn layers() -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let table: Vec<Vec<&str>> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| crate | may import |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let names: BTreeSet<String> = table
        .iter()
        .map(|cells| cells[0].trim_matches('`').to_owned())
        .collect();
    let mut rows: Vec<(String, BTreeSet<String>)> = Vec::new();
    for cells in &table {
        let name = cells[0].trim_matches('`').to_owned();
        // what follows "(" or ";" explains; it names no dependency
        let may = cells[1].split(['(', ';']).next().unwrap();
        let mut allowed: BTreeSet<String> = may
            .split([',', ' ', '`'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                if w.starts_with("tre-") {
                    w.to_owned()
                } else {
                    format!("tre-{w}")
                }
            })
            // "nothing of tre", "all of the above": words, not crates
            .filter(|w| names.contains(w))
            .collect();
        if may.contains("all of the above") {
            allowed.extend(rows.iter().map(|(n, _)| n.clone()));
        }
        rows.push((name, allowed));
    }
    assert!(rows.len() > 5, "the table of docs/architecture.md is there");
    rows
}

/// Every crate of the workspace and the crates of tre it depends on (its
/// `[dependencies]`, not its dev-dependencies).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = workspace
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    let mut crates = BTreeMap::new();
    for member in members.split('"').skip(1).step_by(2) {
        let manifest = std::fs::read_to_string(root().join(member).join("Cargo.toml")).unwrap();
        let mut name = None;
        let mut section = "";
        let mut deps = BTreeSet::new();
        for line in manifest.lines() {
            if line.starts_with('[') {
                section = line;
            } else if section == "[package]" && line.starts_with("name = ") {
                name = Some(
                    line.trim_start_matches("name = ")
                        .trim_matches('"')
                        .to_owned(),
                );
            } else if section == "[dependencies]" && line.starts_with("tre-") {
                let dep = line.split(['.', ' ', '=']).next().unwrap();
                deps.insert(dep.to_owned());
            }
        }
        crates.insert(name.expect("a package name"), deps);
    }
    crates
}

#[test]
fn every_crate_imports_only_what_its_layer_may() {
    let layers = layers();
    let crates = dependencies();
    let position = |name: &str| layers.iter().position(|(n, _)| n == name);
    for (name, deps) in &crates {
        let at = position(name).unwrap_or_else(|| {
            panic!("{name} has no row in docs/architecture.md's table of imports")
        });
        let allowed = &layers[at].1;
        for dep in deps {
            assert!(
                allowed.contains(dep),
                "{name} depends on {dep}, which its row in docs/architecture.md does not allow ({allowed:?})"
            );
            let dep_at = position(dep).unwrap_or_else(|| panic!("{dep} has no row"));
            assert!(
                dep_at < at,
                "{name} depends on {dep}, a crate of a row below its own: a circle could form"
            );
        }
    }
    for (at, (name, allowed)) in layers.iter().enumerate() {
        assert!(
            crates.contains_key(name),
            "the table names {name}, which is no crate"
        );
        for dep in allowed {
            assert!(
                position(dep).is_some_and(|p| p < at),
                "the table lets {name} import {dep}, which is not a row above it"
            );
        }
    }
}

/// The test above fails when a crate reaches up a layer: the job runtime
/// importing the store, say.
#[test]
fn the_rule_refuses_the_runtime_importing_governance() {
    let layers = layers();
    let jobs = layers
        .iter()
        .find(|(n, _)| n == "tre-jobs")
        .expect("a row for tre-jobs");
    assert!(!jobs.1.contains("tre-store") && !jobs.1.contains("tre-domain"));
    assert_eq!(jobs.1, BTreeSet::from(["tre-time".to_owned()]));
}

/// Only the job runtime acts as the `System` (counting cohorts, expiring
/// access, reading without a person's authorization): no face that serves
/// people (the HTTP API, the `tre` commands) makes one, so no person's call
/// can reach what only the runtime may do.
#[test]
fn no_face_of_people_acts_as_the_system() {
    for face in ["crates/api/src", "crates/cli/src"] {
        for file in rust_files(&root().join(face)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                assert!(
                    !code.contains("System::new") && !code.contains("tre_app::System"),
                    "{}:{}: a face of people acts as the System",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    assert!(
        !files.is_empty() || dir.ends_with("routes"),
        "{}",
        dir.display()
    );
    files
}
