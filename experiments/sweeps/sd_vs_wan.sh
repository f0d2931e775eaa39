#!/usr/bin/env bash
# Both generations on one clip, into one report: VideoGrain on SD-1.5 (DDIM inversion, ST-Layout attention)
# and region-aware FlowEdit on Wan 2.1 (inversion-free, layout attention on the DiT), the same prompt with its
# local prompts, two seeds each, plus each backbone's plain sampling (the cost reference).
#   bash experiments/sweeps/sd_vs_wan.sh tiny    # offline: model=tiny and model=wan_tiny on the drawn clip
#   bash experiments/sweeps/sd_vs_wan.sh sd15    # real weights: SD-1.5 + ControlNet and Wan2.1-T2V-1.3B
# Each backbone's jobs are a Hydra multirun into the same sweep folder (hydra.sweep.subdir names them), so one
# `videoedit report` compares them. Wan needs 4k+1 frames: both use 13 (9 in the tiny run).
source "$(dirname "$0")/../common.sh"
NAME=sd_vs_wan
export VIDEOEDIT_RUN_ID="${NAME}_$MODEL"
PROMPT='[[Spiderman and Polar Bear jogging on grass meadow before cherry trees,Spiderman,Polar Bear,cherry trees]]'
if [ "$MODEL" = tiny ]; then
    DATA=(data=two_figures data.num_frames=9 data.height=128 data.width=128 progress_bar=false)
    SD_MODEL=tiny WAN_MODEL=wan_tiny STEPS=10 N_MAX=7
else
    DATA=(data=run_two_man data.num_frames=13)
    SD_MODEL=sd15 WAN_MODEL=wan21_t2v_1_3b STEPS=50 N_MAX=35
fi
COMMON=(experiment_name="$NAME" "prompts=$PROMPT" "sample_seeds=[0],[1]"
        "${DATA[@]}" method.num_inference_steps="$STEPS")
# SD-1.5: VideoGrain with instance_edit's settings; plain sampling with the same ControlNet
"${RUN[@]}" -m +experiment=instance_edit model="$SD_MODEL" "${COMMON[@]}" 'hydra.sweep.subdir=sd_videograin_${hydra.job.num}' "${EXTRA[@]}"
"${RUN[@]}" -m method=sample controlnet=openpose model="$SD_MODEL" "${COMMON[@]}" 'hydra.sweep.subdir=sd_sample_${hydra.job.num}' "${EXTRA[@]}"
# Wan 2.1: region-aware FlowEdit; plain sampling
"${RUN[@]}" -m +experiment=wan_flowedit_instance_edit model="$WAN_MODEL" method.n_max="$N_MAX" "${COMMON[@]}" \
    'hydra.sweep.subdir=wan_flowedit_${hydra.job.num}' "${EXTRA[@]}"
"${RUN[@]}" -m method=sample controlnet=none model="$WAN_MODEL" "${COMMON[@]}" 'hydra.sweep.subdir=wan_sample_${hydra.job.num}' "${EXTRA[@]}"
videoedit report "$OUTPUTS/$NAME/multirun/$VIDEOEDIT_RUN_ID"
