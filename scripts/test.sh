#!/usr/bin/env bash
# Every test, from a fresh machine: Debian packages for the real peers, the workspace install,
# build, lint, types, the test suite (Node 24, and core again on Node 22), packaging checks, and
# the npm smoke test under Node 22 and 24.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM=(npx -y pnpm@10.34.9)

# Real peers the tests start themselves: Exim, swaks, Dante, tini, Chromium, openssl.
DEB_PACKAGES=(exim4-daemon-light swaks tini dante-server chromium openssl util-linux passwd redis-server)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Packages may start their own daemons; the tests run their own instances on free ports.
for daemon in exim4 danted; do
  for pid in $(pidof "$daemon" 2>/dev/null || true); do
    if ! grep -q -- '-C\|-f' "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
  done
done

echo "== install"
"${PNPM[@]}" install --frozen-lockfile
echo "== build"
"${PNPM[@]}" run build
echo "== lint (biome)"
"${PNPM[@]}" run lint
echo "== types"
"${PNPM[@]}" run typecheck
echo "== README and docs snippets type-check"
"${PNPM[@]}" run test:snippets
echo "== packaging (publint, attw)"
"${PNPM[@]}" run test:packaging
echo "== tests (Node 24)"
CI="${CI:-}" "${PNPM[@]}" test
echo "== core tests on Node 22"
"${PNPM[@]}" run test:node22
echo "== smoke: npm install of the packed packages, ESM and CJS, Node 22 and 24"
"${PNPM[@]}" run test:smoke
