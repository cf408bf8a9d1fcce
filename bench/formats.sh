#!/usr/bin/env bash
# Extraction throughput on a mixed corpus, and the time per file of each child-process converter.
#
#   bench/formats.sh [FILES] [BINARY]
#
# The corpus is FILES files (default 500) cycled from tests/data/docs (PDFs, scans, office files
# old and new, mail, mailboxes, archives, images); docpipe keeps no cache by content, so every copy
# is read in full. `docpipe process` runs the extract stage only (OCR included, children found in
# archives and mail read too) on the default configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-500}
binary=${2:-target/release/docpipe}
work=var/bench-formats
rm -rf "$work" && mkdir -p "$work/in"

mapfile -t seeds < <(ls tests/data/docs)
for ((i = 0; i < files; i++)); do
  seed=${seeds[$((i % ${#seeds[@]}))]}
  cp "tests/data/docs/$seed" "$work/in/$(printf %04d "$i")-$seed"
done
bytes=$(du -sb "$work/in" | cut -f1)

export OMP_THREAD_LIMIT=1
start=$(date +%s.%N)
"$binary" process "$work/in" --out "$work/out" --stages extract --batch bench-formats | tail -1
end=$(date +%s.%N)
python3 - "$start" "$end" "$files" "$bytes" "$work/out/results.jsonl" <<'PY'
import json, sys
start, end, files, size, results = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
secs = end - start
docs = sum(1 for _ in open(results))
print(f"{files} submitted files ({size / 1e6:.1f} MB), {docs} documents with children: {secs:.1f} s, "
      f"{files / secs:.2f} files/s, {docs / secs:.2f} documents/s, {size / 1e6 / secs:.2f} MB/s")
PY

echo
echo "| converter | file | ms per file (median of 5) |"
echo "|---|---|---|"
time_it() {
  local label=$1 file=$2; shift 2
  local runs=()
  for _ in 1 2 3 4 5; do
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    runs+=($(((t1 - t0) / 1000)))
  done
  local median
  median=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 3p)
  printf '| %s | %s | %.1f |\n' "$label" "$file" "$(echo "$median / 1000" | bc -l)"
}
d=tests/data/docs
tmp=$(mktemp -d)
time_it antiword testWORD.doc antiword -m UTF-8.txt -w 0 $d/testWORD.doc
time_it xls2csv testEXCEL.xls xls2csv -q3 -d utf-8 $d/testEXCEL.xls
time_it catppt testPPT.ppt catppt -d utf-8 $d/testPPT.ppt
time_it "readpst" testPST_variousBodyTypes.pst sh -c "rm -rf $tmp/pst && mkdir $tmp/pst && readpst -e -q -D -b -8 -cv -o $tmp/pst $d/testPST_variousBodyTypes.pst"
time_it "lsar -j" test-documents.7z lsar -j $d/test-documents.7z
time_it "unar, one member" test-documents.7z unar -q -nr -o - -i $d/test-documents.7z 3
time_it "lsar -j" test-documents.rar lsar -j $d/test-documents.rar
time_it "unar, one member" test-documents.rar unar -q -nr -o - -i $d/test-documents.rar 3
time_it pdftotext stanley.ec02.pdf pdftotext -enc UTF-8 $d/stanley.ec02.pdf -
rm -rf "$tmp"
