#!/usr/bin/env bash
# Check that the library is protected: a thin wrapper over `refserver dr check`
# (verifies the newest backup chain, prints the readiness score and what to do).
# Suitable for cron or monitoring; exit code 0 = safe, 1 = a problem, 2 = cannot run.
#
#   scripts/check_backups.sh [--no-verify] [--min-score N] [--json]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${REFSERVER:-}" ]]; then cli="$REFSERVER"
elif command -v refserver >/dev/null 2>&1; then cli="refserver"
elif [[ -x "$here/.venv/bin/refserver" ]]; then cli="$here/.venv/bin/refserver"
else echo "refserver is not installed (run 'make install' in $here)" >&2; exit 2; fi

exec "$cli" dr check "$@"
