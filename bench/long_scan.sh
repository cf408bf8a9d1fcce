#!/usr/bin/env bash
# Long scans through `docpipe process` (extract stage, automatic OCR): pages/min for a PDF of N
# blank pages and one of N scanned pages (bench/long_scan.py makes both), with the OCR engines
# one document's pages are spread over (`extract.ocr_page_threads`) at each count given.
#
#   bench/long_scan.sh [PAGES] [BINARY] [THREADS...]     e.g. bench/long_scan.sh 200 target/debug/docpipe 1 2
#
# THREADS "-" runs without setting extract.ocr_page_threads (a binary from before it existed).
set -euo pipefail
cd "$(dirname "$0")/.."
pages=${1:-200}
binary=$(realpath "${2:-target/debug/docpipe}")
shift $(( $# < 2 ? $# : 2 ))
threads=("$@")
[ ${#threads[@]} -eq 0 ] && threads=(1 2)
work=var/bench-long-scan
mkdir -p "$work"
python3 bench/long_scan.py "$work" "$pages"

export OMP_THREAD_LIMIT=1
echo "| PDF | pages | ocr_page_threads | s | pages/min | outcome |"
echo "|---|---:|---:|---:|---:|---|"
for kind in blank scans; do
  for t in "${threads[@]}"; do
    out="$work/out-$kind-$t"
    rm -rf "$out" "$work/in" && mkdir -p "$work/in" && ln "$work/$kind-$pages.pdf" "$work/in/$kind.pdf"
    env_threads=()
    [ "$t" != "-" ] && env_threads=(env "DOCPIPE_EXTRACT__OCR_PAGE_THREADS=$t")
    start=$(date +%s.%N)
    (cd "$work" && "${env_threads[@]}" "$binary" process in --out "out-$kind-$t" --stages extract --batch "long-$kind" >/dev/null 2>"out-$kind-$t.log")
    end=$(date +%s.%N)
    python3 - "$kind" "$pages" "$t" "$start" "$end" "$out/results.jsonl" <<'PY'
import collections, json, sys
kind, pages, t, start, end, results = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
secs = end - start
outcome = collections.Counter()
for line in open(results):
    for a in json.loads(line)["annotations"]:
        for s in a["body"].get("segments", []) if a["body"].get("kind") == "text" else []:
            outcome[s["problem"]["reason"].split(" (")[0] if s.get("problem") else "text"] += 1
print(f"| {kind}-{pages}.pdf | {pages} | {t} | {secs:.1f} | {pages / secs * 60:.0f} | {dict(outcome)} |")
PY
  done
done
