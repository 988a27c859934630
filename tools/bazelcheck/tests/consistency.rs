//! What Bazel cannot see for itself: every crate target Cargo builds has its Bazel target
//! (with the crate's version and workspace dependencies), so no test runs under one
//! build only; every member Cargo.toml is in MODULE.bazel; the Rust version is
//! rust-toolchain.toml's; every proto is in a proto_library. (A missing source file,
//! compile data or dependency fails the Bazel build itself; the two images are compared
//! by //tools/ociimage:image_parity_test.) `make lint` runs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bazelcheck::{Call, File, Value, files_of, package_files};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Target {
    kind: String,
    name: String,
    /// Relative to the package.
    src: String,
}

struct Package {
    version: String,
    edition: String,
    /// Relative to the root, e.g. `services/core`.
    dir: String,
    targets: Vec<Target>,
    /// (Cargo dependency kind: "normal" or "dev", Bazel label of the library).
    path_deps: Vec<(String, String)>,
}

/// The workspace members, from `cargo metadata`.
fn packages() -> Vec<Package> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version=1",
            "--no-deps",
            "--offline",
            "--locked",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {output:?}");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let root = PathBuf::from(metadata["workspace_root"].as_str().expect("root"));
    let relative = |path: &str| {
        Path::new(path)
            .strip_prefix(&root)
            .expect("inside the workspace")
            .to_string_lossy()
            .into_owned()
    };
    let text = |value: &serde_json::Value| value.as_str().expect("a string").to_owned();
    let list = |value: &serde_json::Value| value.as_array().expect("a list").clone();
    let libraries: Vec<(String, String)> = list(&metadata["packages"])
        .iter()
        .map(|package| {
            let dir = relative(&text(&package["manifest_path"]).replace("/Cargo.toml", ""));
            (
                text(&package["name"]),
                format!("//{dir}:{}", text(&package["name"]).replace('-', "_")),
            )
        })
        .collect();
    list(&metadata["packages"])
        .iter()
        .map(|package| {
            let dir = relative(&text(&package["manifest_path"]).replace("/Cargo.toml", ""));
            Package {
                version: text(&package["version"]),
                edition: text(&package["edition"]),
                targets: list(&package["targets"])
                    .iter()
                    .map(|target| Target {
                        kind: text(&target["kind"][0]),
                        name: text(&target["name"]),
                        src: relative(&text(&target["src_path"]))
                            .trim_start_matches(&format!("{dir}/"))
                            .to_owned(),
                    })
                    .collect(),
                path_deps: list(&package["dependencies"])
                    .iter()
                    .filter(|dependency| dependency["path"].is_string())
                    .map(|dependency| {
                        let name = text(&dependency["name"]);
                        let label = libraries
                            .iter()
                            .find(|(package, _)| *package == name)
                            .map(|(_, label)| label.clone())
                            .unwrap_or_else(|| panic!("{name} is a workspace member"));
                        let kind = dependency["kind"].as_str().unwrap_or("normal").to_owned();
                        (kind, label)
                    })
                    .collect(),
                dir,
            }
        })
        .collect()
}

fn build_file(dir: &str) -> File {
    File::read(root().join(dir).join("BUILD.bazel")).unwrap_or_else(|error| panic!("{error}"))
}

/// A label as `//package:name` (`:name` is in `package`; `//a/b` is `//a/b:b`).
fn absolute(label: &str, package: &str) -> String {
    if let Some(name) = label.strip_prefix(':') {
        format!("//{package}:{name}")
    } else if label.contains(':') {
        label.to_owned()
    } else {
        let name = label.rsplit('/').next().unwrap_or_default();
        format!("{label}:{name}")
    }
}

const RUST_RULES: &[&str] = &[
    "rust_library",
    "rust_binary",
    "rust_test",
    "cargo_build_script",
];

fn rust_rules(build: &File) -> impl Iterator<Item = &Call> {
    build
        .calls
        .iter()
        .filter(|call| RUST_RULES.contains(&call.function.as_str()))
}

fn srcs(call: &Call, dir: &str) -> Vec<String> {
    call.get("srcs")
        .map(|value| files_of(value, &root().join(dir)).unwrap_or_else(|error| panic!("{error}")))
        .unwrap_or_default()
}

fn labels(call: &Call, keyword: &str, dir: &str) -> BTreeSet<String> {
    call.strings(keyword)
        .into_iter()
        .map(|label| absolute(label, dir))
        .collect()
}

fn check(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "the Bazel files have drifted from the Cargo build:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_crate_target_has_its_bazel_target_with_its_workspace_dependencies() {
    let mut problems = Vec::new();
    for package in packages() {
        let build = build_file(&package.dir);
        let dir = &package.dir;
        let rule = |function: &str, name: &str| {
            rust_rules(&build).find(|call| call.function == function && call.name() == Some(name))
        };
        let tests_of = |crate_label: &str| {
            rust_rules(&build)
                .filter(|call| call.function == "rust_test")
                .any(|call| call.get("crate").and_then(Value::as_str) == Some(crate_label))
        };
        let with_src = |function: &str, src: &str| {
            rust_rules(&build)
                .filter(|call| call.function == function)
                .find(|call| srcs(call, dir).iter().any(|file| file == src))
                .cloned()
        };
        let has_lib = package.targets.iter().any(|target| target.kind == "lib");
        for target in &package.targets {
            let (name, src) = (&target.name, &target.src);
            let found = match target.kind.as_str() {
                "lib" | "bin" => {
                    let function = if target.kind == "lib" {
                        "rust_library"
                    } else {
                        "rust_binary"
                    };
                    let found = rule(function, name).filter(|call| srcs(call, dir).contains(src));
                    // rules_rust passes it as CARGO_PKG_VERSION (`--version`).
                    if let Some(call) = found
                        && call.get("version").and_then(Value::as_str) != Some(&package.version)
                    {
                        problems.push(format!("{dir}:{name}: version is not {}", package.version));
                    }
                    if found.is_some() && !tests_of(&format!(":{name}")) {
                        problems.push(format!("{dir}: no rust_test with crate = \":{name}\""));
                    }
                    if let Some(call) = found.filter(|_| target.kind == "lib" || !has_lib) {
                        let deps = labels(call, "deps", dir);
                        for (_, label) in package
                            .path_deps
                            .iter()
                            .filter(|(kind, _)| kind == "normal")
                        {
                            if !deps.contains(label) {
                                problems.push(format!("{dir}:{name}: deps lack {label}"));
                            }
                        }
                    }
                    found.cloned()
                }
                "test" => {
                    let found = with_src("rust_test", src);
                    if let Some(call) = &found {
                        let deps = labels(call, "deps", dir);
                        for (_, label) in &package.path_deps {
                            if !deps.contains(label) {
                                problems.push(format!(
                                    "{dir}:{}: deps lack {label}",
                                    call.name().unwrap_or(name)
                                ));
                            }
                        }
                    }
                    found
                }
                "custom-build" => with_src("cargo_build_script", src),
                other => panic!("{dir}: a {other} target ({name}) is new to this test"),
            };
            if found.is_none() {
                problems.push(format!(
                    "{dir}/BUILD.bazel: no target builds the {} {name} ({src})",
                    target.kind
                ));
            }
        }
    }
    check(problems);
}

#[test]
fn module_lists_every_member_cargo_toml_and_the_lockfile() {
    let module = File::read(root().join("MODULE.bazel")).expect("MODULE.bazel");
    let from_cargo = module
        .calls_of("crate.from_cargo")
        .next()
        .expect("crate.from_cargo");
    let listed: BTreeSet<&str> = from_cargo.strings("manifests").into_iter().collect();
    let mut expected: BTreeSet<String> = packages()
        .iter()
        .map(|package| format!("//{}:Cargo.toml", package.dir))
        .collect();
    expected.insert("//:Cargo.toml".to_owned());
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(listed, expected, "MODULE.bazel crate.from_cargo manifests");
    assert_eq!(
        from_cargo.get("cargo_lockfile").and_then(Value::as_str),
        Some("//:Cargo.lock")
    );
}

#[test]
fn the_bazel_rust_toolchain_is_rust_toolchain_toml() {
    let toolchain = std::fs::read_to_string(root().join("rust-toolchain.toml")).expect("toml");
    let channel = toolchain
        .lines()
        .find_map(|line| line.strip_prefix("channel = "))
        .map(|value| value.trim_matches('"'))
        .expect("rust-toolchain.toml has a channel");
    let module = File::read(root().join("MODULE.bazel")).expect("MODULE.bazel");
    let rust = module
        .calls_of("rust.toolchain")
        .next()
        .expect("rust.toolchain");
    assert_eq!(
        rust.strings("versions"),
        [channel],
        "MODULE.bazel rust.toolchain versions"
    );
    let edition = &packages()[0].edition;
    assert_eq!(
        rust.get("edition").and_then(Value::as_str),
        Some(edition.as_str())
    );
}

#[test]
fn every_proto_is_in_a_proto_library_and_feeds_the_rust_api() {
    let build = build_file("protos");
    let files: BTreeSet<String> = package_files(&root().join("protos"))
        .expect("protos/")
        .into_iter()
        .filter(|file| file != "BUILD.bazel")
        .collect();
    let in_rule = |function: &str| -> BTreeSet<String> {
        build
            .calls_of(function)
            .flat_map(|call| srcs(call, "protos"))
            .collect()
    };
    assert_eq!(
        in_rule("proto_library"),
        files,
        "protos/ files vs proto_library srcs"
    );
    assert_eq!(
        in_rule("filegroup"),
        files,
        "protos/ files vs setpoint_v1_files"
    );
    let api = build_file("services/proto");
    let script = api
        .calls_of("cargo_build_script")
        .next()
        .expect("the api build script");
    assert!(
        script
            .strings("data")
            .contains(&"//protos:setpoint_v1_files"),
        "the api build script reads the protos"
    );
}
