//! `setpoint-devpki`: writes a throwaway CA, a server certificate and operator and viewer
//! client certificates for local use and `make deploy`. The CA key is never written, so
//! nothing else can be issued from it later.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use devpki::{Authority, Subject};

/// Names the server certificate covers: local runs and the in-cluster Service.
const SERVER_HOSTS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "setpoint",
    "setpoint.setpoint",
    "setpoint.setpoint.svc",
    "setpoint.setpoint.svc.cluster.local",
];

/// Generate Setpoint's development PKI (ECDSA P-256, short-lived).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Output directory (created if missing; existing files are replaced).
    #[arg(long, default_value = ".dev/pki")]
    out: PathBuf,
    /// Validity of every certificate, in days.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=90))]
    days: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let validity = Duration::from_secs(args.days * 24 * 3600);
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let ca = Authority::generate("setpoint-dev-ca", validity)?;
    write(&args.out, "ca.crt", ca.cert_pem(), 0o644)?;
    let server = ca.issue(&Subject::server("setpoint", SERVER_HOSTS, validity))?;
    write(&args.out, "server.crt", &server.cert_pem, 0o644)?;
    write(&args.out, "server.key", &server.key_pem, 0o600)?;
    for role in ["operator", "viewer"] {
        let client = ca.issue(
            &Subject::client(role, validity).with_uri(&format!("spiffe://setpoint.dev/{role}")),
        )?;
        write(&args.out, &format!("{role}.crt"), &client.cert_pem, 0o644)?;
        write(&args.out, &format!("{role}.key"), &client.key_pem, 0o600)?;
    }
    println!(
        "wrote CA, server (localhost, 127.0.0.1, setpoint.setpoint.svc) and operator/viewer \
         client certificates, valid {} days, to {}",
        args.days,
        args.out.display()
    );
    Ok(())
}

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    // Replace rather than truncate, so a key file never briefly has looser permissions.
    let _ = fs::remove_file(&path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}
