#!/usr/bin/env bash
# Install videoedit from this checkout with the tested versions into the active Python environment:
#   bash install.sh          # the package (editable) + the offline pose annotator (mediapipe)
#   bash install.sh test     # the same + the test tools (pytest, ruff, onnx, tensorboard)
# The README quickstart and test.sh both use this script, so they give the same environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
extra="pose"
if [ "${1:-}" = "test" ]; then extra="test"; fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extra]"
# mediapipe 0.10.21 (the offline pose annotator: its wheel bundles the BlazePose models) declares
# numpy<2, which would downgrade numpy and opencv for everything; its pose solution runs fine on numpy 2,
# so it goes in without its dependencies (the "pose" extra brings those it needs at run time).
if ! "$PYTHON" -c "import mediapipe" 2>/dev/null; then
    # no 0.10.21 wheel for this Python (e.g. > 3.12): warn and go on; the mediapipe tests then skip
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt "mediapipe==0.10.21" \
        || echo "[install.sh] WARNING: mediapipe==0.10.21 could not be installed for $("$PYTHON" -V 2>&1); the offline pose annotator (annotator=pose_mediapipe) is unavailable"
fi
