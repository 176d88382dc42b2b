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
# Debian's chromium serves kaleido (figure export) and the browser tests; install it when missing
# and possible (root with apt-get), otherwise those tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian's chromium"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "[setup] could not install chromium: static figure export tests will be skipped"
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
