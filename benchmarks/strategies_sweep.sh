#!/usr/bin/env bash
# The "Strategies I" table of docs/results.md: every issue-4 method and its peers on
# split_mnist1d (class-IL), split_mnist1d_til (task-IL) and permuted_mnist1d (domain-IL),
# seeds 0, 1, 2, then `clplat-report` per scenario (mean ± std over seeds).
#
#   benchmarks/strategies_sweep.sh [OUT_DIR]            # all three scenarios
#   SCENARIOS="split_mnist1d" benchmarks/strategies_sweep.sh multirun/strategies
#   JOBS=2 benchmarks/strategies_sweep.sh        # local parallel jobs (launcher=joblib), one core each
#
# Budget (the same for every method of a scenario): the default GRU-128, Adam lr 0.003, batch 64,
# evaluation on the whole test split of each task. Split streams: trainer.epochs=5 (the platform
# default: 65 iterations per experience of 800 samples), evaluation every 10 iterations.
# permuted_mnist1d: trainer.epochs=2 (126 iterations per experience of 4000 samples; one epoch
# leaves the GRU far from trained), evaluation every 25 iterations (5 tasks x 1000 test samples).
# One intra-op thread per run (tiny batches; the machine is shared).
set -uo pipefail

OUT=${1:-multirun/strategies_$(date +%Y-%m-%d_%H-%M-%S)}
SCENARIOS=${SCENARIOS:-"split_mnist1d permuted_mnist1d split_mnist1d_til"}
SEEDS=${SEEDS:-0,1,2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
TRAIN=${CLPLAT_TRAIN:-clplat-train}
REPORT=${CLPLAT_REPORT:-clplat-report}
JOBS=${JOBS:-1}
LAUNCH=(launcher=basic)
if [ "$JOBS" -gt 1 ]; then LAUNCH=(launcher=joblib hydra.launcher.n_jobs="$JOBS"); fi

for stream in $SCENARIOS; do
  epochs=5 every=10
  if [ "$stream" = permuted_mnist1d ]; then epochs=2 every=25; fi
  common=(stream="$stream" trainer.epochs="$epochs" eval.every_n_iters="$every" seed="$SEEDS"
          logger=none trainer.checkpoint=false "${LAUNCH[@]}")
  # the methods at their configured defaults
  "$TRAIN" -m "${common[@]}" \
    strategy=naive,joint,replay,der,derpp,ewc,ewc_online,si,lwf,agem,power_law,kfpf \
    hydra.sweep.dir="$OUT/$stream/methods"
  # power-law rehearsal's controls (same pools, amount and timing) and its interleaved form
  "$TRAIN" -m "${common[@]}" strategy=power_law strategy.schedule=uniform,exponential \
    hydra.sweep.dir="$OUT/$stream/schedules"
  "$TRAIN" -m "${common[@]}" strategy=power_law strategy.when=interleaved strategy.schedule=power_law,uniform \
    hydra.sweep.dir="$OUT/$stream/interleaved"
  # the plugins on replay
  "$TRAIN" -m "${common[@]}" strategy=replay 'plugin=[refresh],[fpf]' \
    hydra.sweep.dir="$OUT/$stream/plugins"
  "$REPORT" "$OUT/$stream"
done
