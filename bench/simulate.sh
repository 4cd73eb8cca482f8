#!/usr/bin/env bash
# A soak of the data-path simulation (src/data/sim.rs): as many seeds as
# asked, each running its clients for SECONDS of virtual time under the
# full fault mix, in a release build. Prints the summary (seeds, virtual
# seconds per wall second, writes acknowledged, faults injected by kind)
# and the replay line of every failing seed.
#
#   bench/simulate.sh [SEEDS] [SECONDS]      # default 2000 seeds of 60 s
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-2000}
seconds=${2:-60}
DND_SIM_SEEDS=$seeds DND_SIM_SECONDS=$seconds \
  cargo test --release --quiet --test simulation -- --nocapture 2>&1 |
  grep -E '^(simulation:|DND_SIM_SEED=)|panicked|seeds failed'
