#!/usr/bin/env bash
# VideoGrain's multi-grained teaser: class level | instance level | part level, side by side.
#   bash experiments/figures/multi_grained.sh sd15   # the official configs (VideoGrain's data and masks)
#   bash experiments/figures/multi_grained.sh tiny   # offline stand-in on the generated clip (3 regions)
source "$(dirname "$0")/../common.sh"
export VIDEOEDIT_RUN_ID="figure_$MODEL"
runs=()
if [ "$MODEL" = sd15 ]; then
  for exp in videograin_class_run_two_man_man2spider videograin_instance_run_two_man_4cls_spider_polar \
             videograin_part_run_two_man_spider_polar_sunglass; do
    "${RUN[@]}" +experiment="$exp" "${EXTRA[@]}"
    name=$(sed -n 's/^experiment_name: *//p' "configs/experiment/$exp.yaml")
    runs+=("$OUTPUTS/$name/$VIDEOEDIT_RUN_ID")
  done
else
  # regions of the generated clip: left_man, right_man, trees (local prompt i <-> region i)
  declare -A prompts=(
    [class]='[[Two Spiderman jogging under cherry trees,Spiderman,Spiderman,cherry trees]]'
    [instance]='[[Spiderman and Polar Bear jogging under cherry trees,Spiderman,Polar Bear,cherry trees]]'
    [part]='[[Spiderman and Polar Bear in sunglasses jogging under cherry trees,Spiderman,Polar Bear in sunglasses,cherry trees]]'
  )
  for level in class instance part; do
    "${RUN[@]}" method=videograin "${TINY[@]}" experiment_name="figure_${level}_level" \
        "prompts=${prompts[$level]}" "${EXTRA[@]}"
    runs+=("$OUTPUTS/figure_${level}_level/$VIDEOEDIT_RUN_ID")
  done
fi
videoedit compare "${runs[@]}" --labels "class level" "instance level" "part level" \
    --out "$OUTPUTS/figures/multi_grained_$MODEL"
