# Shared by the experiment scripts (source it). Sets:
#   MODEL    tiny | sd15 (first argument of the calling script)
#   TINY     overrides that make a run offline and quick: the tiny model on the generated two-figures clip
#   RUN      the run.py command (python, or `accelerate launch` when LAUNCH is set)
#   EXTRA    the calling script's remaining arguments, passed to run.py (e.g. hydra/launcher=slurm ...)
# Run folders are named by VIDEOEDIT_RUN_ID (fixed per script and model), so running a script again
# resumes it: finished runs are skipped (add force=true to EXTRA to redo them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="${1:-tiny}"
shift || true
EXTRA=("$@")
case "$MODEL" in
  tiny|sd15) ;;
  *) echo "usage: $0 [tiny|sd15] [run.py overrides...]" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python}"
# LAUNCH="accelerate launch --num_processes 4" splits the work over 4 GPUs (see experiments/README.md)
read -r -a RUN <<< "${LAUNCH:-$PYTHON} run.py"
OUTPUTS="${VIDEOEDIT_OUTPUT_ROOT:-outputs}"
# tiny: 8 frames at 128 px, 10 steps; inversion on the editing schedule (TokenFlow's 500-step grid is slow on a CPU)
TINY=(model=tiny data=two_figures data.num_frames=8 data.height=128 data.width=128 method.num_inference_steps=10 method.inversion.num_inversion_steps=null progress_bar=false)
