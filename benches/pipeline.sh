#!/usr/bin/env bash
# One command for the end-to-end benchmark: tracerd (ort-cpu, tract) against the Python peer on a
# clinical-size synthetic study. Extra arguments go to the benchmark (`small`, `no-tract`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet -r tests/oracle/requirements.txt -r benches/peer/requirements.txt
exec cargo bench --bench pipeline -- "$@"
