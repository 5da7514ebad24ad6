#!/usr/bin/env bash
# Runs the unit + e2e suites (`npm test`) on another Node.js line, e.g. `npm run test:node -- 24`
# or `bash scripts/node-line.sh 26 test/packaging.e2e-spec.ts` (arguments after the line go to Jest).
# The line comes from the npm registry's `node` package, installed once into .tools/node-LINE
# (git-ignored) and put first on PATH for this command only: npm, Jest and every child process
# the tests spawn run on it. The project's node_modules and dist/ are shared with the main line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINE="${1:-}"
if ! [[ "$LINE" =~ ^[0-9]{2}$ ]]; then
  echo "node-line.sh: usage: node-line.sh LINE [jest args...]  (LINE: a Node.js major, e.g. 22, 24, 26)" >&2
  exit 2
fi
shift

DIR="$ROOT/.tools/node-$LINE"
BIN="$DIR/node_modules/node/bin"
if ! "$BIN/node" --version 2>/dev/null | grep -q "^v$LINE\."; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo "node-line.sh: installing node@$LINE into .tools/node-$LINE" >&2
  npm install --prefix "$DIR" --no-save --no-audit --no-fund --loglevel=error "node@$LINE" >&2
  if ! "$BIN/node" --version 2>/dev/null | grep -q "^v$LINE\."; then
    echo "node-line.sh: the npm registry's node@$LINE gave no Node $LINE binary at $BIN/node" >&2
    exit 1
  fi
fi

export PATH="$BIN:$PATH"
echo "node-line.sh: $(node --version) from .tools/node-$LINE" >&2
cd "$ROOT"
exec npm test -- "$@"
