#!/usr/bin/env bash
# Runs ruff and the pytest suite; pytest's "no tests ran" (exit 5) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
echo "[test] ruff check"
.venv/bin/ruff check . || exit 1
echo "[test] pytest"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "[test] error: pytest collected no tests" >&2
  exit 1
fi
exit $rc
