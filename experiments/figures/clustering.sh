#!/usr/bin/env bash
# VideoGrain's clustering figure: PCA and KMeans of the self-attention maps recorded during inversion,
# clusters named by the source prompt's nouns, in <run>/sd_study/ (README: cluster_inversion_feature: True).
#   bash experiments/figures/clustering.sh sd15
#   bash experiments/figures/clustering.sh tiny
source "$(dirname "$0")/../common.sh"
export VIDEOEDIT_RUN_ID="figure_$MODEL"
if [ "$MODEL" = sd15 ]; then
  exp=videograin_instance_run_two_man_4cls_spider_polar
  "${RUN[@]}" +experiment="$exp" experiment_name=figure_clustering method.cluster_inversion_feature=true "${EXTRA[@]}"
else
  "${RUN[@]}" method=videograin "${TINY[@]}" experiment_name=figure_clustering method.cluster_inversion_feature=true \
      'prompts=[[Spiderman and Polar Bear jogging under cherry trees,Spiderman,Polar Bear,cherry trees]]' "${EXTRA[@]}"
fi
ls "$OUTPUTS/figure_clustering/$VIDEOEDIT_RUN_ID/sd_study"
