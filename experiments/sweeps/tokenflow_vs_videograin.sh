#!/usr/bin/env bash
# TokenFlow vs VideoGrain on VideoGrain's instance-editing clip and prompt (both with their default,
# official settings; the same seeds), with the report: metrics table and the grid source | VideoGrain | TokenFlow.
#   bash experiments/sweeps/tokenflow_vs_videograin.sh tiny
#   bash experiments/sweeps/tokenflow_vs_videograin.sh sd15
# TokenFlow uses the full prompt only (no regions); VideoGrain uses the local prompts and masks.
export METHODS=videograin,tokenflow NAME=tokenflow_vs_videograin
exec bash "$(dirname "$0")/methods_x_seeds.sh" "$@"
