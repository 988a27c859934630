//! `setpoint-devpki`: writes throwaway CAs, a server certificate and operator and viewer
//! client certificates for local use and `make deploy`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Generate Setpoint's development PKI (ECDSA P-256, short-lived): the server CA ca.crt
/// (clients trust it) with server.{crt,key} (localhost, 127.0.0.1 and the in-cluster
/// Service names), and a separate client CA client-ca.crt (the server trusts it) with
/// client certificates operator.{crt,key} (spiffe://setpoint.dev/operator) and
/// viewer.{crt,key} (spiffe://setpoint.dev/viewer). The CA keys are never written.
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
    devpki::write_dev_pki(&args.out, Duration::from_secs(args.days * 24 * 3600))?;
    println!(
        "wrote the development PKI (valid {} days) to {}",
        args.days,
        args.out.display()
    );
    Ok(())
}
