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

# Reinstall only when the dependency files change (or the package is not importable).
stamp="$VENV/.videoedit-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! python -c "import videoedit, annotators" 2>/dev/null; then
    echo "[test.sh] installing videoedit with constraints.txt"
    python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi
# mediapipe 0.10.21 (the offline pose annotator: its wheel bundles the BlazePose models) declares
# numpy<2, which would downgrade numpy and opencv for everything; it runs fine on numpy 2, so it is
# installed without its dependencies (those it needs at run time come with the "pose" extra).
if ! python -c "import mediapipe" 2>/dev/null; then
    echo "[test.sh] installing mediapipe==0.10.21 (--no-deps)"
    # no 0.10.21 wheel for this Python (e.g. > 3.12): warn and go on; the mediapipe tests then skip
    python -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt "mediapipe==0.10.21" \
        || echo "[test.sh] WARNING: mediapipe==0.10.21 could not be installed for $(python -V 2>&1); the offline pose annotator (annotator=pose_mediapipe) and its tests are unavailable"
fi

# Tests never touch a model hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
python -m pytest "$@"
