//! `setpoint-image`: wraps a static setpoint-server binary into a reproducible OCI image
//! archive (see the library docs). `make image` runs it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Build Setpoint's OCI image archive from a static binary, without a container engine.
/// The archive loads with `docker load` and `kind load image-archive`.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The static setpoint-server binary.
    #[arg(long)]
    binary: PathBuf,
    /// Output archive.
    #[arg(long, default_value = "target/image/setpoint-server.tar")]
    output: PathBuf,
    /// Image name and tag.
    #[arg(long, default_value = "setpoint-server:dev")]
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = std::fs::read(&args.binary)
        .with_context(|| format!("reading {}", args.binary.display()))?;
    let image = ociimage::build(
        &binary,
        &ociimage::ImageSpec {
            tag: &args.tag,
            created: args.source_date_epoch,
            labels: &ociimage::labels(&args.image_version, &args.source, &args.revision),
        },
    )
    .with_context(|| format!("{} cannot be the image's binary", args.binary.display()))?;
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
}
