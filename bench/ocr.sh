#!/usr/bin/env bash
# OCR throughput: docpipe's OcrEngine against the tesseract CLI on tests/data/ocr, in one run.
# Prints a markdown table (pages/min, ratios, mean CER). Options go to the bench binary:
#   bench/ocr.sh [--rounds N] [--copies N] [--tessdata DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

command -v tesseract >/dev/null || { echo "tesseract CLI not installed (apt-get install tesseract-ocr)" >&2; exit 1; }

# libgomp reads this once at process start; Tesseract's OpenMP threads only add overhead when
# pages already run in parallel, and the CLI is measured at its best with it too.
export OMP_THREAD_LIMIT=1

cargo bench -p docpipe-models --bench ocr -- "$@"
