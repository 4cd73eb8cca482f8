#!/usr/bin/env bash
# A soak of the data-path simulation (src/data/sim/): as many seeds as
# asked, each running its clients for SECONDS of virtual time under the
# full fault mix (network faults, crashes, joins, leaves, removals, skewed
# clocks, anti-entropy and tombstone collection), in a release build, on
# every core. Prints the summary: seeds run, virtual seconds per wall
# second, writes acknowledged, faults injected by kind across all seeds,
# and the replay line of every failing seed.
#
#   bench/simulate.sh [SEEDS] [SECONDS]      # default 2000 seeds of 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-2000}
seconds=${2:-60}
DND_SIM_SEEDS=$seeds DND_SIM_SECONDS=$seconds \
  cargo test --release --quiet --test simulation seeds_of_a_hostile_network -- --nocapture 2>&1 |
  grep -E '^(simulation|DND_SIM_SEED=)|panicked|seeds failed' || true
