#!/usr/bin/env bash
# Batch throughput across worker processes that share only RabbitMQ and an S3 store (s3s-fs on
# 127.0.0.1), as separate hosts would: 1 vs 2 worker processes per stage group, documents/min.
#
#   bench/hosts.sh [FILES] [BINARY]
#
# The batch is FILES documents (default 300) cycled from samples/batch (text in several encodings
# and languages, an email with an attachment, two PDFs, one of them scanned), through extract,
# langid and summarize: one process group serves extract, the other langid and summarize, each
# process in its own working directory. Needs RabbitMQ on 127.0.0.1:5672 and s3s-fs
# (scripts/setup.sh --broker).
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-300}
binary=$(realpath "${2:-target/debug/docpipe}")
work=$(realpath -m var/bench-hosts)
rm -rf "$work" && mkdir -p "$work/in" "$work/s3/bench"

mapfile -t seeds < <(ls samples/batch)
for ((i = 0; i < files; i++)); do
  seed=${seeds[$((i % ${#seeds[@]}))]}
  # A line of its own makes every copy a different document (no dedupe by content).
  { cat "samples/batch/$seed"; [[ $seed == *.txt ]] && printf '\n%d\n' "$i"; } >"$work/in/$(printf %04d "$i")-$seed"
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
s3s=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
"$s3s" --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret "$work/s3" >/dev/null 2>&1 &
s3_pid=$!
pids=()
cleanup() { kill "${pids[@]}" "$s3_pid" 2>/dev/null || true; }
trap cleanup EXIT
sleep 1

export OMP_THREAD_LIMIT=1 DOCPIPE_BLOBS__KIND=s3 DOCPIPE_BLOBS__S3__ENDPOINT="http://127.0.0.1:$port" \
  DOCPIPE_BLOBS__S3__BUCKET=bench DOCPIPE_BLOBS__S3__ALLOW_HTTP=true \
  DOCPIPE_S3_ACCESS_KEY_ID=bench DOCPIPE_S3_SECRET_ACCESS_KEY=bench-secret \
  DOCPIPE_MODELS__DIR="\"$PWD/var/models\"" DOCPIPE_LANGID__MODEL="\"$PWD/var/models/lid.176.ftz\""

echo "| worker processes per stage group | documents | seconds | documents/min |"
echo "|---:|---:|---:|---:|"
for per_group in 1 2; do
  export DOCPIPE_BROKER__PREFIX="bench-hosts-$per_group-$$"
  pids=()
  for ((i = 0; i < per_group; i++)); do
    for stages in extract langid,summarize; do
      dir="$work/host-$per_group-$i-${stages%%,*}"
      mkdir -p "$dir"
      (cd "$dir" && exec "$binary" worker --stages "$stages" >worker.log 2>&1) &
      pids+=($!)
    done
  done
  sleep 2
  start=$(date +%s.%N)
  (cd "$work" && "$binary" submit in --case bench --batch "b$per_group" --stages extract,langid,summarize >/dev/null)
  (cd "$work" && "$binary" results --batch "b$per_group" --out "out-$per_group" --idle-timeout 600 2>/dev/null)
  end=$(date +%s.%N)
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  docs=$(wc -l <"$work/out-$per_group/b$per_group.jsonl")
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); d=int(sys.argv[3]); print(f'| {sys.argv[4]} | {d} | {s:.1f} | {d/s*60:.0f} |')" "$start" "$end" "$docs" "$per_group"
done
