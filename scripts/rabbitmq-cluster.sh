#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster beside the machine's default broker (left alone), for trying
# docpipe's failover and for the cluster test. Built on scripts/rabbitmq-node.sh.
#
#   scripts/rabbitmq-cluster.sh start DIR [FIRST_PORT] [NAME]   three nodes, AMQP on FIRST_PORT..+2
#   scripts/rabbitmq-cluster.sh stop DIR [NAME]                 stops every node still running
#   scripts/rabbitmq-cluster.sh status DIR [NAME]               cluster membership, as node 1 sees it
#
# Nodes are NAME1@localhost, NAME2@localhost, NAME3@localhost (NAME defaults to docpipe-c), each
# with its data in DIR/NAMEi; FIRST_PORT defaults to 5681. Nodes 2 and 3 join node 1. Point docpipe
# at it with
#   DOCPIPE_BROKER__URL=amqp://guest@127.0.0.1:5681/%2f
#   DOCPIPE_BROKER__FAILOVER_URLS='["amqp://guest@127.0.0.1:5682/%2f","amqp://guest@127.0.0.1:5683/%2f"]'
# and stop or kill a node while a batch runs (scripts/rabbitmq-node.sh stop NAME2 DIR/NAME2).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
node_sh="$here/rabbitmq-node.sh"

usage() {
  echo "usage: $0 start DIR [FIRST_PORT] [NAME] | stop DIR [NAME] | status DIR [NAME]" >&2
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
case "$cmd" in
  start) first_port=${3:-5681} name=${4:-docpipe-c} ;;
  stop | status) name=${3:-docpipe-c} ;;
  *) usage ;;
esac
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case "$cmd" in
start)
  # Boots in parallel (each takes 10-20 s on two cores), then the joins one after the other.
  pids=()
  for i in 1 2 3; do
    "$node_sh" start "$name$i" $((first_port + i - 1)) "$dir/$name$i" >"$dir/$name$i.start.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for i in 1 2 3; do
    wait "${pids[$((i - 1))]}" || { echo "rabbitmq-cluster: $name$i did not start:" >&2; cat "$dir/$name$i.start.log" >&2; failed=1; }
  done
  [ "$failed" = 0 ] || exit 1
  for i in 2 3; do
    members=$("$node_sh" ctl "$name$i" "$dir/$name$i" -q cluster_status --formatter json)
    if ! grep -q "\"$name""1@localhost\"" <<<"$members"; then
      "$node_sh" ctl "$name$i" "$dir/$name$i" -q stop_app
      "$node_sh" ctl "$name$i" "$dir/$name$i" -q join_cluster "${name}1@localhost"
      "$node_sh" ctl "$name$i" "$dir/$name$i" -q start_app
    fi
  done
  "$node_sh" ctl "${name}1" "$dir/${name}1" -q await_online_nodes 3
  echo "rabbitmq-cluster: ${name}1..3 running, AMQP on 127.0.0.1:$first_port-$((first_port + 2))"
  ;;
stop)
  for i in 3 2 1; do
    "$node_sh" stop "$name$i" "$dir/$name$i" || true
  done
  ;;
status)
  "$node_sh" ctl "${name}1" "$dir/${name}1" cluster_status
  ;;
esac
