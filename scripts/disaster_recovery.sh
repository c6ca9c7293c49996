#!/usr/bin/env bash
# Restore the RefServer library: a thin wrapper over `refserver offsite pull` and
# `refserver dr restore` (see DISASTER_RECOVERY.md). Stop the server first.
#
#   scripts/disaster_recovery.sh [--from-offsite TARGET [--key KEYFILE]] [--latest | --at TIME | BACKUP_ID] [--no-safety-backup]
#
# Examples:
#   scripts/disaster_recovery.sh --latest
#   scripts/disaster_recovery.sh --at 2026-11-27T09:00:00Z
#   scripts/disaster_recovery.sh --from-offsite s3://my-bucket/refserver --key ~/refserver-offsite.key --latest --no-safety-backup
# Exit code: 0 when the library was restored and the consistency check is clean.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${REFSERVER:-}" ]]; then cli="$REFSERVER"
elif command -v refserver >/dev/null 2>&1; then cli="refserver"
elif [[ -x "$here/.venv/bin/refserver" ]]; then cli="$here/.venv/bin/refserver"
else echo "refserver is not installed (run 'make install' in $here)" >&2; exit 2; fi

offsite=""; key=""; restore_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --from-offsite) offsite="${2:?--from-offsite needs a target}"; shift 2 ;;
    --key) key="${2:?--key needs a key file}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) restore_args+=("$1"); shift ;;
  esac
done
if [[ ${#restore_args[@]} -eq 0 ]]; then restore_args=(--latest); fi

if [[ -n "$offsite" ]]; then
  pull=(offsite pull --target "$offsite")
  if [[ -n "$key" ]]; then pull+=(--key "$key"); fi
  "$cli" "${pull[@]}"
fi
exec "$cli" dr restore "${restore_args[@]}"
