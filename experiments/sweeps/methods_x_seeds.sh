#!/usr/bin/env bash
# Two methods x two seeds on one clip and prompt, one job each; then the report (table, plots, grid).
#   bash experiments/sweeps/methods_x_seeds.sh tiny
#   METHODS=videograin,dualflow bash experiments/sweeps/methods_x_seeds.sh sd15
# PROMPT is [full prompt, local prompt per region...]; methods without regions use the full prompt only.
source "$(dirname "$0")/../common.sh"
METHODS="${METHODS:-videograin,tokenflow}"
PROMPT="${PROMPT:-[[Spiderman and Polar Bear jogging under cherry trees,Spiderman,Polar Bear,cherry trees]]}"
NAME="${NAME:-methods_x_seeds}"
if [ "$MODEL" = tiny ]; then SETUP=("${TINY[@]}"); else SETUP=(data=run_two_man controlnet=openpose); fi
export VIDEOEDIT_RUN_ID="${NAME}_$MODEL"
"${RUN[@]}" -m experiment_name="$NAME" "${SETUP[@]}" "prompts=$PROMPT" \
    method="$METHODS" 'sample_seeds=[0],[1]' "${EXTRA[@]}"
videoedit report "$OUTPUTS/$NAME/multirun/$VIDEOEDIT_RUN_ID"
