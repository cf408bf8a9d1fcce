#!/usr/bin/env bash
# End to end, what a user feels: `docpipe process` on 50 Chinese documents (FLORES-200 devtest
# lines 1-100, two lines a document) with extraction, language id and translation, timed, once as
# docpipe translated before batching (one sequence at a time: [llm] slots = 1, two translate
# threads) and once with the defaults. Writes bench/results/translate-batch.md.
#   bench/translate_batch.sh            (after a build: target/debug/docpipe)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DOCPIPE_BIN:-target/debug/docpipe}
batch=var/bench/zho50
rm -rf "$batch" && mkdir -p "$batch"
python3 - "$batch" <<'PY'
import sys
lines = open("tests/data/mt/flores200-devtest-1-100.zho_Hans", encoding="utf-8").read().splitlines()
for i in range(50):
    with open(f"{sys.argv[1]}/doc{i + 1:02}.txt", "w", encoding="utf-8") as f:
        f.write(lines[2 * i] + "\n" + lines[2 * i + 1] + "\n")
PY
export OMP_THREAD_LIMIT=1
before=$(mktemp) && trap 'rm -f "$before"' EXIT
# The default pipeline with the settings docpipe had before batched decoding.
sed -e 's/^slots = .*/slots = 1/' -e '/^# Translate threads mostly wait/,/^threads = 8$/d' pipeline.toml > "$before"
run() { # label config
    local out=var/bench/out-$1 store
    store=var/bench/$1.sqlite
    rm -rf "$out" "$store"
    local t0=$(date +%s.%N)
    DOCPIPE_STORE__SQLITE_PATH="\"$store\"" DOCPIPE_BLOBS__DIR='"var/bench/blobs"' \
        "$bin" --config "$2" process "$batch" --out "$out" --case bench --batch "zho50-$1" --stages extract,langid,translate >/dev/null 2>var/bench/$1.log
    local t1=$(date +%s.%N)
    python3 - "$1" "$out" "$t0" "$t1" <<'PY'
import json, sys, glob
label, out, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rows = [json.loads(l) for f in glob.glob(out + "/*.jsonl") for l in open(f)]
segs = [s for r in rows for a in r.get("annotations", []) if a["body"]["kind"] == "translation" for s in a["body"]["segments"]]
status = {}
for s in segs:
    status[s["status"]] = status.get(s["status"], 0) + 1
secs = t1 - t0
print(f"| {label} | {len(rows)} | {secs:.0f} s | {len(rows) / secs * 60:.1f} | {status} |")
PY
}
{
    echo "| settings | documents | wall time | documents/min | segments by status |"
    echo "|---|---|---|---|---|"
    run before "$before"
    run after pipeline.toml
} | tee bench/results/translate-batch.md
