#!/usr/bin/env bash
# End-to-end tests: the built alou binary driven by real clients (official SDKs).
# Usage: tests/e2e/run.sh [extra `node --test` args]
# ALOU_BIN picks the binary (default build/asan/alou, else build/release/alou).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/tests/e2e"

if [[ ! -d $E2E/node_modules ]]; then
  echo "e2e: npm ci in tests/e2e"
  (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error)
fi

cd "$ROOT"
# Arguments ending in .test.mjs pick the files (ctest runs one per entry);
# the others go to `node --test`.
tests=()
args=()
for a in "$@"; do
  if [[ $a == *.test.mjs ]]; then tests+=("$a"); else args+=("$a"); fi
done
if (( ${#tests[@]} == 0 )); then
  shopt -s nullglob
  tests=(tests/e2e/*.test.mjs)
fi
if (( ${#tests[@]} == 0 )); then
  echo "e2e: no tests/e2e/*.test.mjs" >&2
  exit 1
fi
[[ -n ${ALOU_BIN:-} ]] && export ALOU_BIN
exec node --test --test-reporter=spec "${args[@]}" "${tests[@]}"
