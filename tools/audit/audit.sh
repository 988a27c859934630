#!/usr/bin/env bash
# make audit: checks Cargo.lock against a dated snapshot of the RustSec advisory
# database, with no network. The snapshot (a plain copy of github.com/rustsec/advisory-db
# with a SNAPSHOT file naming its commit and date) is where SETPOINT_ADVISORY_DB says,
# else ../shared/advisory-db beside the checkout, else /work/shared/advisory-db.
# cargo-deny reads its database as a git clone under `db-path`, so the snapshot becomes
# a one-commit repository in the cache, committed with the snapshot's date. The live
# database: `make audit-live`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/lib.sh

deny=${CARGO_DENY:?CARGO_DENY names the cargo-deny binary (make audit sets it)}
snapshot=${SETPOINT_ADVISORY_DB:-$(shared_path advisory-db)}
[[ -f $snapshot/SNAPSHOT ]] || {
  echo "audit: no advisory database snapshot at $snapshot (set SETPOINT_ADVISORY_DB, or run make audit-live)" >&2
  exit 1
}
commit=$(sed -n 's/^commit //p' "$snapshot/SNAPSHOT")
date=$(sed -n 's/^date //p' "$snapshot/SNAPSHOT")
[[ -n $commit && -n $date ]] || { echo "audit: $snapshot/SNAPSHOT names no commit and date" >&2; exit 1; }

# The directory name cargo-deny derives from the default database URL.
db_path=$cache/advisory-db/$commit
clone=$db_path/advisory-db-3157b0e258782691
if [[ ! -d $clone/.git ]]; then
  rm -rf "$db_path" && mkdir -p "$clone"
  cp -R "$snapshot/." "$clone/"
  git -C "$clone" init --quiet
  git -C "$clone" add --all
  GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
    git -C "$clone" -c user.name=setpoint -c user.email=setpoint@localhost \
    commit --quiet --message "RustSec advisory database at $commit"
fi

config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat deny.toml - >"$config" <<TOML

[advisories]
db-path = "$db_path"
TOML
age=$((($(date +%s) - $(date -d "$date" +%s)) / 86400))
echo "audit: Cargo.lock against the RustSec advisory database of $date (commit ${commit:0:12}, $age days old)"
"$deny" --offline --config "$config" check advisories
