#!/usr/bin/env bash
# What signing adds to `docpipe process` end to end, on the cheapest text documents there are
# (English: no translation, so nothing hides the cost): N documents of ten FLORES lines each,
# processed with every default stage, without and with a signing key, alternately, twice each.
# Usage: bench/signing.sh [N]   (default 300). Prints wall seconds per run and documents/s.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
bin=target/debug/docpipe
[ -x "$bin" ] || cargo build --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/in"
mapfile -t lines < tests/data/mt/flores200-devtest-1-100.eng_Latn
for i in $(seq 0 $((n - 1))); do
  for j in $(seq 0 9); do echo "${lines[$(( (i * 10 + j) % 100 ))]}"; done > "$work/in/doc-$i.txt"
  echo "document $i" >> "$work/in/doc-$i.txt"  # each file distinct
done
$bin keys generate --out "$work/keys" > /dev/null
run() {
  local label=$1; shift
  rm -rf "$work/out-$label"
  # wall seconds, then CPU seconds (user + system) of the whole process
  env "$@" DOCPIPE_BLOBS__DIR="$work/blobs" /usr/bin/time -f "$label %e %U %S" -o "$work/time" \
    "$bin" process "$work/in" --out "$work/out-$label" > /dev/null 2>&1
  cat "$work/time"
}
for round in 1 2 3 4; do
  run unsigned X=1
  run signed DOCPIPE_SIGNING__KEY_FILE="$work/keys/signing.key"
done | awk -v n="$n" '{ w[$1] += $2; c[$1] += $3 + $4; k[$1]++; printf "%-8s wall %6.2f s  cpu %6.2f s  %6.0f documents/s\n", $1, $2, $3 + $4, n / $2 }
  END {
    wu = w["unsigned"] / k["unsigned"]; ws = w["signed"] / k["signed"]
    cu = c["unsigned"] / k["unsigned"]; cs = c["signed"] / k["signed"]
    printf "mean of %d: wall %.2f s unsigned, %.2f s signed (%+.1f %%); cpu %.2f s, %.2f s (%+.1f %%); cpu per document %.0f us unsigned\n", k["signed"], wu, ws, (ws / wu - 1) * 100, cu, cs, (cs / cu - 1) * 100, cu / n * 1e6
  }'
