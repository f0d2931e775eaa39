#!/usr/bin/env bash
# Create (or reuse) a virtualenv, install the project with the tested versions, run the whole suite offline.
#   bash test.sh              # everything
#   bash test.sh tests/io -x  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${VIDEOEDIT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[test.sh] creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Reinstall only when the dependency files change (or the package is not importable). install.sh is the
# README's install step too, so the quickstart and the tests run in the same environment.
stamp="$VENV/.videoedit-installed"
want="$(cat pyproject.toml constraints.txt install.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! python -c "import videoedit, annotators" 2>/dev/null; then
    echo "[test.sh] installing videoedit with constraints.txt (install.sh test)"
    PYTHON=python bash install.sh test
    echo "$want" > "$stamp"
fi

# Tests never touch a model hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
python -m pytest "$@"
