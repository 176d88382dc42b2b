#!/usr/bin/env bash
# Create .venv (when missing) and install requirements.txt into it (when it changed).
# Idempotent: a second run with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "[setup] installing requirements.txt into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check --quiet --requirement requirements.txt
    echo "$want" > "$stamp"
else
    echo "[setup] .venv is up to date"
fi
