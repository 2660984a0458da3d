#!/bin/bash
# Server CPU per request of a running node: its user+system time across one `mpreg bench`
# run, divided by the requests the run made (docs/benchmarks.md, "Issue 16").
# usage: cpu_per_req.sh port scenario
port=$1; only=$2
pid=$(pgrep -f "mpreg server start --port $port" | head -1)
ticks() { awk '{print $14+$15}' /proc/$pid/stat; }
t0=$(ticks)
ok=$("$(dirname "$0")/../../target/release/mpreg" bench --url ws://127.0.0.1:$port --seconds 2 --latency-calls 1 --only "$only" 2>&1 | awk -F'|' '/in flight/ {next} NF>6 && $3 ~ /[0-9]/ {s+=$6} END {print s}')
t1=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "print(f'port $port $only: {$ok} requests, {($t1-$t0)/$hz:.2f} s CPU, {($t1-$t0)/$hz/$ok*1e6:.2f} us/request')"
