//! ARCHITECTURE.md's crate graph is the workspace's: the block between its `crate graph` markers lists,
//! for every crate of the workspace, exactly the workspace crates it depends on (normal dependencies), as
//! `cargo metadata` reports them. A change that moves a wall must move the map with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("nodes/ sits in the workspace root")
}

/// The graph as the map draws it: `crate → a, b` or `crate → (none)`, one line a crate.
fn drawn() -> Graph {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text.find("<!-- crate graph: begin -->").expect("the begin marker");
    let end = text.find("<!-- crate graph: end -->").expect("the end marker");
    text[start..end]
        .lines()
        .filter_map(|line| line.split_once('→'))
        .map(|(name, deps)| {
            let deps = deps.trim();
            let deps: BTreeSet<String> =
                if deps == "(none)" { BTreeSet::new() } else { deps.split(',').map(|d| d.trim().to_owned()).collect() };
            (name.trim().to_owned(), deps)
        })
        .collect()
}

/// The graph as cargo resolves it: every workspace member and its normal dependencies among them.
fn actual() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .filter(|d| members.contains(d))
                .collect();
            (p["name"].as_str().expect("a name").to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_map_draws_the_crate_graph_cargo_resolves() {
    let (drawn, actual) = (drawn(), actual());
    assert!(drawn.len() >= 9, "the map draws every crate: {drawn:?}");
    assert_eq!(drawn, actual, "ARCHITECTURE.md's crate graph (left) against cargo metadata (right)");
}

#[test]
fn the_wire_and_disk_types_depend_on_nothing_of_ours_and_the_product_links_no_lab() {
    let actual = actual();
    assert!(actual["playground-proto"].is_empty(), "{:?}", actual["playground-proto"]);
    for lab in ["simulations", "bench"] {
        assert!(!actual["nodes"].contains(lab), "the product depends on {lab}");
    }
}
