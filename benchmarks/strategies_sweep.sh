#!/usr/bin/env bash
# The "Strategies I" table of docs/results.md: every issue-4 method and its peers on
# split_mnist1d (class-IL), split_mnist1d_til (task-IL) and permuted_mnist1d (domain-IL),
# seeds 0, 1, 2, then `clplat-report` per scenario (mean ± std over seeds).
#
#   benchmarks/strategies_sweep.sh [OUT_DIR]            # all three scenarios
#   SCENARIOS="split_mnist1d" benchmarks/strategies_sweep.sh multirun/strategies
#   JOBS=2 benchmarks/strategies_sweep.sh        # local parallel jobs (launcher=joblib), one core each
#   PARTS="methods schedules" SCENARIOS=permuted_mnist1d benchmarks/strategies_sweep.sh   # a part
#
# Budget (the same for every method of a scenario): the default GRU-128, Adam lr 0.003, batch 64,
# evaluation on the whole test split of each task. Split streams: trainer.epochs=5 (the platform
# default: 65 iterations per experience of 800 samples), evaluation every 10 iterations.
# permuted_mnist1d: trainer.epochs=2 (126 iterations per experience of 4000 samples; one epoch
# leaves the GRU far from trained), evaluation every 25 iterations (5 tasks x 1000 test samples).
# One intra-op thread per run (tiny batches; the machine is shared).
set -uo pipefail  # no -e: a sweep with a failed job still reports the others

OUT=${1:-multirun/strategies_$(date +%Y-%m-%d_%H-%M-%S)}
SCENARIOS=${SCENARIOS:-"split_mnist1d permuted_mnist1d split_mnist1d_til"}
SEEDS=${SEEDS:-0,1,2}
PARTS=${PARTS:-"methods schedules interleaved plugins"}
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
          logger=none trainer.checkpoint=false plots=false "${LAUNCH[@]}")
  for part in $PARTS; do
    case $part in
      methods)  # the methods at their configured defaults
        args=(strategy=naive,joint,replay,der,derpp,ewc,ewc_online,si,lwf,agem,power_law,kfpf) ;;
      schedules)  # power-law rehearsal's controls: same pools, amount and timing, another revisit law
        args=(strategy=power_law strategy.schedule=uniform,exponential) ;;
      interleaved)  # rehearsal mixed into the next task's training instead of after each task
        args=(strategy=power_law strategy.when=interleaved strategy.schedule=power_law,uniform) ;;
      plugins)  # the plugins on replay
        args=(strategy=replay 'plugin=[refresh],[fpf]') ;;
      *) echo "unknown part $part (methods schedules interleaved plugins)" >&2; exit 2 ;;
    esac
    "$TRAIN" -m "${common[@]}" "${args[@]}" hydra.sweep.dir="$OUT/$stream/$part" \
      || echo "some jobs of $stream/$part failed: see $OUT/$stream/$part/failed_jobs.txt" >&2
  done
  "$REPORT" "$OUT/$stream"
done
