//! Samples of the measured processes from `/proc`: CPU time and memory figures.

use std::time::Duration;

use anyhow::Context as _;

/// User plus system CPU time of process `pid` (`/proc/<pid>/stat`, in the kernel's
/// 100 Hz user-visible ticks).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields.get(index).context("a short /proc stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A memory figure of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
pub(crate) fn memory(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// Resets process `pid`'s peak ("VmHWM") to its current resident size.
pub(crate) fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    Ok(())
}
