#!/usr/bin/env bash
# The baseline (method=ddim): guidance 5 and 7.5, one job each, two seeds per job; then the report.
#   bash experiments/sweeps/guidance_x_seeds.sh tiny        # offline, CPU
#   bash experiments/sweeps/guidance_x_seeds.sh sd15        # SD 1.5 on the run_two_man clip
source "$(dirname "$0")/../common.sh"
if [ "$MODEL" = tiny ]; then SETUP=("${TINY[@]}"); else SETUP=(data=run_two_man controlnet=openpose); fi
export VIDEOEDIT_RUN_ID="guidance_x_seeds_$MODEL"
"${RUN[@]}" -m experiment_name=guidance_x_seeds method=ddim "${SETUP[@]}" \
    'prompts=[[two astronauts jogging on the moon,astronaut,astronaut]]' 'sample_seeds=[0,1]' \
    method.guidance_scale=5,7.5 "${EXTRA[@]}"
videoedit report "$OUTPUTS/guidance_x_seeds/multirun/$VIDEOEDIT_RUN_ID"
