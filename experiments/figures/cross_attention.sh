#!/usr/bin/env bash
# VideoGrain's cross-attention weight figure (README "Visualize Cross Attention Weight"): one heat map per
# word of the prompt, written to <run>/sample/visualization_denoise/edit0_seed0/cross_attn.mp4 (+ frames).
#   bash experiments/figures/cross_attention.sh sd15
#   bash experiments/figures/cross_attention.sh tiny
source "$(dirname "$0")/../common.sh"
export VIDEOEDIT_RUN_ID="figure_$MODEL"
if [ "$MODEL" = sd15 ]; then
  exp=videograin_instance_run_two_man_3cls_spider_polar_vis_weight
  "${RUN[@]}" +experiment="$exp" "${EXTRA[@]}"
  run="$OUTPUTS/$(sed -n 's/^experiment_name: *//p' "configs/experiment/$exp.yaml")/$VIDEOEDIT_RUN_ID"
else
  "${RUN[@]}" method=videograin "${TINY[@]}" experiment_name=figure_cross_attention method.vis_cross_attn=true \
      'prompts=[[Spiderman and Polar Bear jogging under cherry trees,Spiderman,Polar Bear,cherry trees]]' "${EXTRA[@]}"
  run="$OUTPUTS/figure_cross_attention/$VIDEOEDIT_RUN_ID"
fi
ls "$run/sample/visualization_denoise/edit0_seed0/cross_attn.mp4"
