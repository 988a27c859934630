//! `setpoint-image`: puts Setpoint's static binaries (`setpoint-api`,
//! `setpoint-reconciler`) into one reproducible OCI image archive (see the library docs).
//! `make image` runs it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Build Setpoint's OCI image archive from its static binaries, without a container
/// engine. The archive loads with `docker load` and `kind load image-archive`.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A static binary, placed at /<its file name> (repeat for each; one must be
    /// setpoint-api, the entrypoint).
    #[arg(long = "binary", value_name = "PATH", required = true)]
    binaries: Vec<PathBuf>,
    /// Output archive.
    #[arg(long, default_value = "target/image/setpoint.tar")]
    output: PathBuf,
    /// Image name and tag.
    #[arg(long, default_value = "setpoint:dev")]
    tag: String,
    /// Timestamp of every file and of the image, in seconds since the epoch.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u64,
    /// org.opencontainers.image.version label.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    image_version: String,
    /// org.opencontainers.image.source label.
    #[arg(long, default_value = ociimage::SOURCE)]
    source: String,
    /// org.opencontainers.image.revision label (e.g. the git commit).
    #[arg(long, default_value = "unknown")]
    revision: String,
}

/// A `--binary` file: its name in the image and its contents.
struct BinaryFile {
    name: String,
    contents: Vec<u8>,
}

fn read_binary(path: &std::path::Path) -> anyhow::Result<BinaryFile> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", path.display()))?
        .to_owned();
    let contents = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(BinaryFile { name, contents })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = args
        .binaries
        .iter()
        .map(|path| read_binary(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let binaries: Vec<ociimage::Binary> = files
        .iter()
        .map(|file| ociimage::Binary {
            name: &file.name,
            contents: &file.contents,
        })
        .collect();
    let image = ociimage::build(
        &binaries,
        &ociimage::ImageSpec {
            tag: &args.tag,
            created: args.source_date_epoch,
            labels: &ociimage::labels(&args.image_version, &args.source, &args.revision),
        },
    )
    .with_context(|| {
        let paths: Vec<String> = args
            .binaries
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        format!("cannot build the image from {}", paths.join(", "))
    })?;
    if let Some(parent) = args.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.output, &image.archive)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{} {} ({} bytes) {}",
        args.tag,
        image.digest,
        image.archive.len(),
        args.output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }

    #[test]
    fn binary_repeats_and_the_defaults_name_the_one_image() {
        use clap::Parser;
        let args = super::Args::try_parse_from([
            "setpoint-image",
            "--binary",
            "a/setpoint-api",
            "--binary",
            "b/setpoint-reconciler",
        ])
        .expect("arguments");
        assert_eq!(args.binaries.len(), 2);
        assert_eq!(args.tag, "setpoint:dev");
        assert_eq!(
            args.output,
            std::path::Path::new("target/image/setpoint.tar")
        );
        assert!(
            super::Args::try_parse_from(["setpoint-image"]).is_err(),
            "no binary"
        );
    }
}
