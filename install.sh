#!/usr/bin/env bash
# Install videoedit from this checkout with the tested versions into the active Python environment:
#   bash install.sh          # the package (editable) + the offline pose annotator (mediapipe)
#   bash install.sh test     # the same + the test tools (pytest, ruff, onnx, tensorboard) + SAM-2 (the sam2 extra)
#   bash install.sh sam2     # the package + SAM-2 (propagation=sam2)
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
# SAM-2 (the "sam2" extra: propagation=sam2) is on PyPI only as an sdist whose build imports torch: it is built
# against the installed torch (build isolation would fetch another torch), without its optional CUDA extension
# (SAM2_BUILD_CUDA=1 with nvcc builds it). Installed with the test tools, or by `bash install.sh sam2`; its tests
# skip when it is absent.
if { [ "${1:-}" = "test" ] || [ "${1:-}" = "sam2" ]; } && ! "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sam2') is None)"; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -c constraints.txt setuptools \
        && SAM2_BUILD_CUDA="${SAM2_BUILD_CUDA:-0}" "$PYTHON" -m pip install --quiet --disable-pip-version-check \
            --no-build-isolation -c constraints.txt sam2 \
        || echo "[install.sh] WARNING: sam2 could not be installed; propagation=sam2 and its tests are unavailable"
fi
