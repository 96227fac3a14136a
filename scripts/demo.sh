#!/usr/bin/env bash
# The demo: two organisations, each sending through its own account, one falling over from a
# dead first route. Needs nothing installed but Node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
PNPM=(npx -y pnpm@10.34.9)
"${PNPM[@]}" install --frozen-lockfile --silent
"${PNPM[@]}" --silent --filter '@mailvia/core' --filter '@mailvia/express' run build >/dev/null
exec "${PNPM[@]}" --silent demo "$@"
