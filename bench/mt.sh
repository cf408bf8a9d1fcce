#!/usr/bin/env bash
# Marian speed: candle (docpipe) against PyTorch and CTranslate2 in the same session, on the same
# checkpoint. Needs ../shared/bench/marian-anchor (builds the checkpoint and times the others;
# a ~6 GB venv under $MTANCHOR_DIR, ~15 minutes). Writes bench/results/mt.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ANCHOR="${ANCHOR:-../shared/bench/marian-anchor}"
export MTANCHOR_DIR="${MTANCHOR_DIR:-/tmp/mtanchor}"
export OMP_THREAD_LIMIT=1 RAYON_NUM_THREADS="${THREADS:-2}"
mkdir -p bench/results
# The anchor exits 1 when a reference cell fails; the table shows those cells as missing.
bash "$ANCHOR/run_marian_anchor.sh" --threads "${THREADS:-2}" | tee bench/results/mt-anchor.log || true
MT_BENCH_MODEL="$MTANCHOR_DIR/opus-mt-base-random" cargo bench -q -p docpipe-models --bench mt | tee bench/results/mt-candle.log
python3 bench/mt_table.py "$MTANCHOR_DIR/results/marian_anchor.json" bench/results/mt-candle.log | tee bench/results/mt.md
