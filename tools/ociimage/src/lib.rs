//! Builds Setpoint's OCI image: one layer holding its static binaries at the root
//! (`/setpoint-api`, `/setpoint-reconciler`), no base image, no shell, no package manager,
//! a numeric non-root user. The output is one tar archive that is both an OCI image
//! layout (`index.json`, `oci-layout`, `blobs/`) and a Docker archive (`manifest.json`),
//! so `docker load` and `kind load image-archive` both accept it.
//!
//! Reproducible by construction: every timestamp is fixed, entries are written in name
//! order (whatever order the binaries were given in) with fixed owners, JSON has a fixed
//! key order, and the layer is stored uncompressed (its digest is its diff ID; no
//! compressor version can change it).

use serde_json::json;
use sha2::{Digest, Sha256};

/// The user the image runs as (distroless "nonroot").
pub const USER: &str = "65532:65532";
/// What the image runs when a Deployment sets no `command`: the API server. Each of
/// Setpoint's Deployments names its binary explicitly (k8s/base/api.yaml, reconciler.yaml).
pub const ENTRYPOINT: &str = "/setpoint-api";
/// The API server's default listeners: gRPC (mTLS) and HTTP (health, metrics); the
/// reconciler uses the HTTP one.
pub const EXPOSED_PORTS: &[&str] = &["8443/tcp", "8081/tcp"];
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Where the source code is (the `source` label's default).
pub const SOURCE: &str = "https://github.com/setpoint-dev/setpoint";

/// The image's `org.opencontainers.image.*` labels (without the prefix): the fixed ones
/// and those given for each build. The Bazel image (`services/BUILD.bazel`) has the
/// same; `//tools/ociimage:image_parity_test` compares the two images.
pub fn labels<'a>(version: &'a str, source: &'a str, revision: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("title", "setpoint"),
        ("version", version),
        ("source", source),
        ("revision", revision),
        ("licenses", "Apache-2.0"),
    ]
}

/// What goes into the image besides the binaries.
pub struct ImageSpec<'a> {
    /// `repository:tag`, e.g. `setpoint:dev`.
    pub tag: &'a str,
    /// Seconds since the epoch for every timestamp (`SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// `org.opencontainers.image.*` labels, e.g. `("version", "0.1.0")`.
    pub labels: &'a [(&'a str, &'a str)],
}

/// One executable of the image, at `/<name>`.
pub struct Binary<'a> {
    /// Its file name in the image, e.g. `setpoint-api`.
    pub name: &'a str,
    pub contents: &'a [u8],
}

/// The image archive and its manifest digest (`sha256:…`), which names the image.
pub struct Image {
    pub archive: Vec<u8>,
    pub digest: String,
}

/// Why an executable cannot run in the image.
#[derive(Debug, thiserror::Error)]
pub enum ExecutableError {
    #[error("not a 64-bit little-endian ELF executable")]
    NotElf,
    #[error("ELF machine {0:#x} is not x86_64 or aarch64")]
    UnsupportedMachine(u16),
    #[error(
        "dynamically linked (it names a program interpreter), but the image has no libc: \
         build it with -C target-feature=+crt-static"
    )]
    Dynamic,
}

/// Why no image was built: a binary the image could not run, a set of binaries that do
/// not make one image, or an archive that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name} cannot run in the image")]
    Unrunnable {
        name: String,
        #[source]
        reason: ExecutableError,
    },
    #[error(
        "{name} is built for {architecture}, but {entrypoint} (the entrypoint) for \
         {expected}: the binaries of one image share its architecture",
        entrypoint = ENTRYPOINT.trim_start_matches('/')
    )]
    MixedArchitectures {
        name: String,
        architecture: &'static str,
        expected: &'static str,
    },
    #[error("no binary is named {}, the image's entrypoint", ENTRYPOINT.trim_start_matches('/'))]
    NoEntrypoint,
    #[error("two binaries are named {0}")]
    DuplicateName(String),
    #[error("{0:?} is not a file name the image's root can hold")]
    InvalidName(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The OCI architecture of a static ELF executable, read from its header; refuses
/// anything the image could not run.
pub fn architecture(binary: &[u8]) -> Result<&'static str, ExecutableError> {
    const PT_INTERP: u32 = 3;
    fn field<const N: usize>(binary: &[u8], at: u64) -> Result<[u8; N], ExecutableError> {
        let at = usize::try_from(at).map_err(|_| ExecutableError::NotElf)?;
        binary
            .get(at..at.saturating_add(N))
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(ExecutableError::NotElf)
    }
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if field::<6>(binary, 0)? != *b"\x7fELF\x02\x01" {
        return Err(ExecutableError::NotElf);
    }
    let architecture = match u16::from_le_bytes(field(binary, 18)?) {
        0x3e => "amd64",
        0xb7 => "arm64",
        other => return Err(ExecutableError::UnsupportedMachine(other)),
    };
    // The program headers: none may name an interpreter (the dynamic loader).
    let table = u64::from_le_bytes(field(binary, 0x20)?);
    let entry_size = u64::from(u16::from_le_bytes(field(binary, 0x36)?));
    for index in 0..u64::from(u16::from_le_bytes(field(binary, 0x38)?)) {
        let at = table.saturating_add(index * entry_size);
        if u32::from_le_bytes(field(binary, at)?) == PT_INTERP {
            return Err(ExecutableError::Dynamic);
        }
    }
    Ok(architecture)
}

/// The architecture of a binary of the image, or why it cannot run there.
fn runnable(binary: &Binary) -> Result<&'static str, Error> {
    architecture(binary.contents).map_err(|reason| Error::Unrunnable {
        name: binary.name.to_owned(),
        reason,
    })
}

/// The one architecture of `binaries` (sorted by name): each a static x86_64 or aarch64
/// ELF executable with a file name of its own, built for the entrypoint's architecture.
fn common_architecture(binaries: &[&Binary]) -> Result<&'static str, Error> {
    let entrypoint = binaries
        .iter()
        .find(|binary| ENTRYPOINT.strip_prefix('/') == Some(binary.name))
        .ok_or(Error::NoEntrypoint)?;
    let expected = runnable(entrypoint)?;
    for (index, binary) in binaries.iter().enumerate() {
        let name = binary.name;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        if index > 0 && binaries[index - 1].name == name {
            return Err(Error::DuplicateName(name.to_owned()));
        }
        let architecture = runnable(binary)?;
        if architecture != expected {
            return Err(Error::MixedArchitectures {
                name: name.to_owned(),
                architecture,
                expected,
            });
        }
    }
    Ok(expected)
}

/// The image of `binaries`: static x86_64 or aarch64 ELF executables of one
/// architecture, with distinct names, one of them `setpoint-api` (the entrypoint). The
/// order they are given in does not change the image.
pub fn build(binaries: &[Binary], spec: &ImageSpec) -> Result<Image, Error> {
    let mut binaries: Vec<&Binary> = binaries.iter().collect();
    binaries.sort_unstable_by_key(|binary| binary.name);
    let architecture = common_architecture(&binaries)?;
    let files: Vec<(&str, &[u8], u32)> = binaries
        .iter()
        .map(|binary| (binary.name, binary.contents, 0o755))
        .collect();
    let layer = tar_of(&files, spec.created)?;
    let layer_digest = sha256(&layer);
    let labels: serde_json::Map<String, serde_json::Value> = spec
        .labels
        .iter()
        .map(|(key, value)| (format!("org.opencontainers.image.{key}"), json!(value)))
        .collect();
    let ports: serde_json::Map<String, serde_json::Value> = EXPOSED_PORTS
        .iter()
        .map(|port| (port.to_string(), json!({})))
        .collect();
    let created = rfc3339(spec.created);
    let config = json!({
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {
            "User": USER,
            "Entrypoint": [ENTRYPOINT],
            "ExposedPorts": ports,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": "setpoint-image"}],
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len()}],
        "annotations": {"org.opencontainers.image.created": created},
    })
    .to_string()
    .into_bytes();
    let digest = sha256(&manifest);
    let (repository, reference) = spec.tag.rsplit_once(':').unwrap_or((spec.tag, "latest"));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": digest,
            "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": reference,
                "io.containerd.image.name": format!("docker.io/library/{repository}:{reference}"),
            },
        }],
    })
    .to_string()
    .into_bytes();
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let docker_manifest = json!([{
        "Config": blob(&config_digest),
        "RepoTags": [spec.tag],
        "Layers": [blob(&layer_digest)],
    }])
    .to_string()
    .into_bytes();

    let (layer_path, config_path, manifest_path) =
        (blob(&layer_digest), blob(&config_digest), blob(&digest));
    let archive = tar_of(
        &[
            (
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
                0o644,
            ),
            ("index.json", &index, 0o644),
            ("manifest.json", &docker_manifest, 0o644),
            (&layer_path, &layer, 0o644),
            (&config_path, &config, 0o644),
            (&manifest_path, &manifest, 0o644),
        ],
        spec.created,
    )?;
    Ok(Image { archive, digest })
}

/// A tar of regular files owned by root, all with the same mtime, in the given order.
fn tar_of(files: &[(&str, &[u8], u32)], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        builder.append_data(&mut header, path, *contents)?;
    }
    builder.into_inner()
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days, proleptic
/// Gregorian), to avoid a date dependency for one field.
fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read;

    use super::*;

    const SPEC: ImageSpec = ImageSpec {
        tag: "setpoint:dev",
        created: 1_700_000_000,
        labels: &[
            ("version", "0.1.0"),
            ("source", "https://example.com/setpoint"),
        ],
    };

    /// Each entry of a tar: path, mode and contents, in archive order.
    fn entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(archive);
        archive
            .entries()
            .expect("tar")
            .map(|entry| {
                let mut entry = entry.expect("entry");
                let path = entry.path().expect("path").display().to_string();
                let mode = entry.header().mode().expect("mode");
                let mut contents = Vec::new();
                entry.read_to_end(&mut contents).expect("read");
                (path, mode, contents)
            })
            .collect()
    }

    fn files(archive: &[u8]) -> HashMap<String, Vec<u8>> {
        entries(archive)
            .into_iter()
            .map(|(path, _, contents)| (path, contents))
            .collect()
    }

    fn json_of(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("json")
    }

    /// A minimal 64-bit little-endian ELF header for `machine` with one program header
    /// of type `segment` (1 = PT_LOAD, 3 = PT_INTERP), then `payload`.
    fn elf(machine: u16, segment: u32, payload: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; 64 + 56];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[18..20].copy_from_slice(&machine.to_le_bytes());
        header[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        header[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        header[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        header[64..68].copy_from_slice(&segment.to_le_bytes());
        header.extend_from_slice(payload);
        header
    }

    fn api(contents: &[u8]) -> Binary<'_> {
        Binary {
            name: "setpoint-api",
            contents,
        }
    }

    fn reconciler(contents: &[u8]) -> Binary<'_> {
        Binary {
            name: "setpoint-reconciler",
            contents,
        }
    }

    /// The image's config and its one layer.
    fn config_and_layer(image: &Image) -> (serde_json::Value, Vec<u8>) {
        let files = files(&image.archive);
        let blob = |digest: &str| {
            files
                .get(&format!(
                    "blobs/sha256/{}",
                    digest.trim_start_matches("sha256:")
                ))
                .unwrap_or_else(|| panic!("blob {digest}"))
                .clone()
        };
        let manifest = json_of(&blob(&image.digest));
        let config = json_of(&blob(
            manifest["config"]["digest"].as_str().expect("digest"),
        ));
        let layer = blob(manifest["layers"][0]["digest"].as_str().expect("digest"));
        (config, layer)
    }

    #[test]
    fn the_same_binaries_give_the_same_digest() {
        let (api_binary, reconciler_binary) = (elf(0x3e, 1, b"api"), elf(0x3e, 1, b"reconciler"));
        let first =
            build(&[api(&api_binary), reconciler(&reconciler_binary)], &SPEC).expect("image");
        let second =
            build(&[api(&api_binary), reconciler(&reconciler_binary)], &SPEC).expect("image");
        assert_eq!(first.archive, second.archive);
        assert_eq!(first.digest, second.digest);
        let other_api = elf(0x3e, 1, b"other api");
        let other =
            build(&[api(&other_api), reconciler(&reconciler_binary)], &SPEC).expect("image");
        assert_ne!(first.digest, other.digest);
    }

    #[test]
    fn the_order_binaries_are_given_in_does_not_change_the_image() {
        let (api_binary, reconciler_binary) = (elf(0x3e, 1, b"api"), elf(0x3e, 1, b"reconciler"));
        let forward =
            build(&[api(&api_binary), reconciler(&reconciler_binary)], &SPEC).expect("image");
        let backward =
            build(&[reconciler(&reconciler_binary), api(&api_binary)], &SPEC).expect("image");
        assert_eq!(forward.archive, backward.archive);
    }

    #[test]
    fn the_archive_is_a_consistent_oci_layout_and_docker_archive() {
        let binary = elf(0x3e, 1, b"static");
        let image = build(&[api(&binary)], &SPEC).expect("image");
        let files = files(&image.archive);
        let blob = |digest: &str| {
            files
                .get(&format!(
                    "blobs/sha256/{}",
                    digest.trim_start_matches("sha256:")
                ))
                .unwrap_or_else(|| panic!("blob {digest}"))
        };
        let index = json_of(&files["index.json"]);
        let descriptor = &index["manifests"][0];
        assert_eq!(descriptor["digest"], image.digest.as_str());
        assert_eq!(
            descriptor["annotations"]["io.containerd.image.name"],
            "docker.io/library/setpoint:dev"
        );
        let manifest_bytes = blob(&image.digest);
        assert_eq!(sha256(manifest_bytes), image.digest);
        let manifest = json_of(manifest_bytes);
        let config = json_of(blob(manifest["config"]["digest"].as_str().expect("digest")));
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("digest");
        let layer = blob(layer_digest);
        assert_eq!(sha256(layer), layer_digest);
        assert_eq!(
            config["rootfs"]["diff_ids"][0], layer_digest,
            "uncompressed layer"
        );
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["User"], USER);
        assert_eq!(config["config"]["Entrypoint"], json!(["/setpoint-api"]));
        assert_eq!(config["config"]["ExposedPorts"]["8443/tcp"], json!({}));
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.version"],
            "0.1.0"
        );
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");

        let docker = json_of(&files["manifest.json"]);
        assert_eq!(docker[0]["RepoTags"][0], "setpoint:dev");
        assert!(files.contains_key(docker[0]["Config"].as_str().expect("config")));
    }

    #[test]
    fn both_binaries_are_executables_at_the_root_of_one_layer_in_name_order() {
        let (api_binary, reconciler_binary) = (elf(0x3e, 1, b"api"), elf(0x3e, 1, b"reconciler"));
        let image =
            build(&[reconciler(&reconciler_binary), api(&api_binary)], &SPEC).expect("image");
        let (config, layer) = config_and_layer(&image);
        assert_eq!(
            config["rootfs"]["diff_ids"]
                .as_array()
                .expect("diff_ids")
                .len(),
            1
        );
        assert_eq!(
            entries(&layer),
            [
                ("setpoint-api".to_owned(), 0o755, api_binary),
                ("setpoint-reconciler".to_owned(), 0o755, reconciler_binary),
            ],
            "only the binaries: no shell, no package manager"
        );
        let mut archive = tar::Archive::new(layer.as_slice());
        for entry in archive.entries().expect("tar") {
            let header = entry.expect("entry").header().clone();
            assert_eq!(
                (header.uid().expect("uid"), header.gid().expect("gid")),
                (0, 0)
            );
            assert_eq!(header.mtime().expect("mtime"), SPEC.created);
        }
    }

    #[test]
    fn the_architecture_comes_from_the_binaries() {
        assert_eq!(architecture(&elf(0x3e, 1, b"")).expect("x86_64"), "amd64");
        assert_eq!(architecture(&elf(0xb7, 1, b"")).expect("aarch64"), "arm64");
        let (api_binary, reconciler_binary) = (elf(0xb7, 1, b"api"), elf(0xb7, 1, b"reconciler"));
        let image =
            build(&[api(&api_binary), reconciler(&reconciler_binary)], &SPEC).expect("image");
        assert_eq!(config_and_layer(&image).0["architecture"], "arm64");
    }

    #[test]
    fn binaries_of_different_architectures_are_refused() {
        let (api_binary, reconciler_binary) = (elf(0x3e, 1, b""), elf(0xb7, 1, b""));
        let error = build(&[api(&api_binary), reconciler(&reconciler_binary)], &SPEC)
            .err()
            .expect("refused");
        assert!(matches!(error, Error::MixedArchitectures { .. }));
        assert_eq!(
            error.to_string(),
            "setpoint-reconciler is built for arm64, but setpoint-api (the entrypoint) for \
             amd64: the binaries of one image share its architecture"
        );
    }

    #[test]
    fn an_image_without_the_entrypoint_binary_is_refused() {
        let binary = elf(0x3e, 1, b"");
        let error = build(&[reconciler(&binary)], &SPEC).err().expect("refused");
        assert!(matches!(error, Error::NoEntrypoint), "{error}");
        assert!(matches!(build(&[], &SPEC), Err(Error::NoEntrypoint)));
    }

    #[test]
    fn names_that_are_not_one_file_at_the_root_are_refused() {
        let binary = elf(0x3e, 1, b"");
        let named = |name| Binary {
            name,
            contents: &binary,
        };
        for name in ["", ".", "..", "bin/setpoint", "nul\0"] {
            let result = build(&[api(&binary), named(name)], &SPEC);
            assert!(matches!(result, Err(Error::InvalidName(_))), "{name:?}");
        }
        let result = build(&[api(&binary), api(&binary)], &SPEC);
        assert!(matches!(result, Err(Error::DuplicateName(name)) if name == "setpoint-api"));
    }

    #[test]
    fn binaries_the_image_could_not_run_are_refused() {
        let refused = |binary: &[u8]| architecture(binary).expect_err("refused").to_string();
        assert!(refused(b"#!/bin/sh\n").contains("not a 64-bit"));
        let mut elf32 = elf(0x3e, 1, b"");
        elf32[4] = 1;
        assert!(refused(&elf32).contains("not a 64-bit"));
        assert!(refused(&elf(0x28, 1, b"")).contains("0x28 is not x86_64"));
        assert!(refused(&elf(0x3e, 3, b"")).contains("+crt-static"));
        let truncated = &elf(0x3e, 1, b"")[..66];
        assert!(refused(truncated).contains("not a 64-bit"));

        // The image names the binary it refuses.
        let (api_binary, dynamic) = (elf(0x3e, 1, b""), elf(0x3e, 3, b""));
        let error = build(&[api(&api_binary), reconciler(&dynamic)], &SPEC)
            .err()
            .expect("refused");
        assert!(
            matches!(
                &error,
                Error::Unrunnable { name, reason: ExecutableError::Dynamic } if name == "setpoint-reconciler"
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "setpoint-reconciler cannot run in the image"
        );
    }

    /// This test binary itself: a real, dynamically linked executable.
    #[test]
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(target_feature = "crt-static")
    ))]
    fn a_dynamically_linked_executable_is_refused() {
        let binary = std::fs::read(std::env::current_exe().expect("path")).expect("read");
        assert!(matches!(
            architecture(&binary),
            Err(ExecutableError::Dynamic)
        ));
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_867_199), "2026-11-28T11:59:59Z");
    }
}
