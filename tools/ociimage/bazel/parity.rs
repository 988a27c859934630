//! The two images agree: `//services:image` (rules_oci, `make image` under Bazel) and
//! what `setpoint-image` (`make image` under Cargo) builds from the same two static
//! binaries have the same platform, user, entrypoint, ports and labels, and the same
//! binaries at the same paths, in the same order, with the same mode and owner. The
//! Bazel image's distroless base adds what a base does (files, `Env`, `WorkingDir`);
//! nothing else may differ. A Bazel-only test: it reads the image and the binaries from
//! its runfiles (BUILD.bazel next to this file).

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

fn runfile(variable: &str) -> PathBuf {
    std::env::var_os(variable)
        .unwrap_or_else(|| panic!("{variable} is not set: run this test with `bazel test`"))
        .into()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// An OCI layout's blob by its `sha256:…` digest.
fn blob(layout: &Path, digest: &Value) -> Vec<u8> {
    let digest = digest.as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
}

/// Each regular file of an uncompressed layer: path, mode, uid, gid and contents.
fn files(layer: &[u8]) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
    let mut archive = tar::Archive::new(layer);
    let mut files = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let header = entry.header().clone();
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).expect("read");
        let path = path.trim_start_matches("./").to_owned();
        files.push((
            path,
            header.mode().expect("mode") & 0o7777,
            header.uid().expect("uid"),
            header.gid().expect("gid"),
            contents,
        ));
    }
    files
}

/// The config and top layer of an OCI layout with one manifest.
fn config_and_top_layer(layout: &Path) -> (Value, Vec<u8>) {
    let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
    let manifest = json(&blob(layout, &index["manifests"][0]["digest"]));
    let layers = manifest["layers"].as_array().expect("layers");
    let top = layers.last().expect("a layer");
    assert_eq!(
        top["mediaType"], "application/vnd.oci.image.layer.v1.tar",
        "the binaries' layer is an uncompressed tar"
    );
    (
        json(&blob(layout, &manifest["config"]["digest"])),
        blob(layout, &top["digest"]),
    )
}

#[test]
fn the_bazel_image_equals_setpoint_image_but_for_its_base() {
    let api = std::fs::read(runfile("API_BINARY")).expect("the static setpoint-api");
    let reconciler =
        std::fs::read(runfile("RECONCILER_BINARY")).expect("the static setpoint-reconciler");
    let (bazel_config, bazel_layer) = config_and_top_layer(&runfile("BAZEL_IMAGE"));

    // What `make image` writes for the same binaries, unstamped like a plain Bazel build.
    let labels = ociimage::labels(env!("CARGO_PKG_VERSION"), ociimage::SOURCE, "unknown");
    let spec = ociimage::ImageSpec {
        tag: "setpoint:dev",
        created: 0,
        labels: &labels,
    };
    let binaries = [
        ociimage::Binary {
            name: "setpoint-api",
            contents: &api,
        },
        ociimage::Binary {
            name: "setpoint-reconciler",
            contents: &reconciler,
        },
    ];
    let image = ociimage::build(&binaries, &spec).expect("setpoint-image");
    let layout = tempfile::tempdir().expect("temporary directory");
    tar::Archive::new(image.archive.as_slice())
        .unpack(layout.path())
        .expect("unpack the archive");
    let (cargo_config, cargo_layer) = config_and_top_layer(layout.path());

    for field in ["architecture", "os"] {
        assert_eq!(bazel_config[field], cargo_config[field], "{field}");
    }
    for field in ["User", "Entrypoint", "ExposedPorts", "Labels"] {
        assert_eq!(
            bazel_config["config"][field], cargo_config["config"][field],
            "config.{field}"
        );
    }
    assert_eq!(
        bazel_config["config"]["Entrypoint"],
        serde_json::json!([ociimage::ENTRYPOINT])
    );
    // The base's part of the config, and nothing else.
    let mut base_only: Vec<&str> = bazel_config["config"]
        .as_object()
        .expect("config")
        .keys()
        .filter(|key| {
            !cargo_config["config"]
                .as_object()
                .unwrap()
                .contains_key(*key)
        })
        .map(String::as_str)
        .collect();
    base_only.sort_unstable();
    assert_eq!(base_only, ["Env", "WorkingDir"]);

    let bazel_files = files(&bazel_layer);
    assert_eq!(bazel_files, files(&cargo_layer), "the binaries' layer");
    let names: Vec<&str> = bazel_files.iter().map(|file| file.0.as_str()).collect();
    assert_eq!(names, ["setpoint-api", "setpoint-reconciler"]);
    assert_eq!(
        bazel_files[0].4, api,
        "setpoint-api in the image is the static build"
    );
    assert_eq!(
        bazel_files[1].4, reconciler,
        "setpoint-reconciler in the image is the static build"
    );
}
