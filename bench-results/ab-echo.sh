#!/bin/bash
# usage: ab.sh BACKEND SIZE PIPE CONNS ROUNDS [loadgen extra args...]
b=$1; size=$2; pipe=$3; conns=$4; rounds=$5; shift 5; port=9400
for r in $(seq $rounds); do for v in old new; do
  port=$((port+1))
  taskset -c 0 /tmp/echo-$v --backend $b --addr tcp://127.0.0.1:$port > /dev/null 2>&1 &
  pid=$!; sleep 0.4
  out=$(taskset -c 1 /tmp/loadgen --addr 127.0.0.1:$port --conns $conns --size $size --pipeline $pipe --duration 3 --warmup 1 --server-pid $pid "$@" 2>&1)
  kill -TERM $pid; wait $pid 2>/dev/null
  tp=$(echo "$out" | grep -oE "throughput +[0-9]+" | grep -oE "[0-9]+$")
  cpu=$(echo "$out" | grep -oE "server cpu +[0-9.]+" | grep -oE "[0-9.]+$")
  echo "$v $tp $cpu"
done; done
