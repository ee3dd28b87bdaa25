#!/usr/bin/env bash
# Capture a few scrapes of a local node_exporter while the machine is under
# CPU and disk-write load, for the node snapshot's real-data test.
#
# Usage: capture.sh OUTPUT_DIR [SCRAPES] [INTERVAL_S]
#
# Starts its own node_exporter on a free loopback port, stops it (by its
# PID) when done. Writes scrape-NNNN.prom (the raw response body) and
# times.txt (one "FILE UNIX_MS" line per scrape: the time just before the
# request was sent, which is what a Prometheus scraper stamps on samples).
set -euo pipefail

out_dir=${1:?usage: capture.sh OUTPUT_DIR [SCRAPES] [INTERVAL_S]}
scrapes=${2:-5}
interval_s=${3:-5}
exporter=${NODE_EXPORTER:-prometheus-node-exporter}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work_dir=$(mktemp -d)
"$exporter" --web.listen-address="127.0.0.1:$port" --collector.cpu.info >"$work_dir/exporter.log" 2>&1 &
exporter_pid=$!
load_pids=()
cleanup() {
    for pid in "${load_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    kill "$exporter_pid" 2>/dev/null || true
    rm -rf "$work_dir"
}
trap cleanup EXIT

for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break
    sleep 0.1
done

mkdir -p "$out_dir"
: >"$out_dir/times.txt"
for i in $(seq "$scrapes"); do
    name=$(printf 'scrape-%04d.prom' "$i")
    now_ms=$(date +%s%3N)
    curl -sf "http://127.0.0.1:$port/metrics" >"$out_dir/$name"
    echo "$name $now_ms" >>"$out_dir/times.txt"
    [ "$i" -eq "$scrapes" ] && break

    # Load until the next scrape: three busy loops (CPU time, and CPU
    # pressure when the machine has fewer than three CPUs), plus a 64 MiB
    # write with fsync (disk write bytes, I/O time and I/O pressure).
    load_pids=()
    for _ in 1 2 3; do
        timeout "$((interval_s - 1))" python3 -c 'while True: pass' &
        load_pids+=($!)
    done
    dd if=/dev/zero of="$work_dir/load.bin" bs=1M count=64 conv=fsync status=none
    rm -f "$work_dir/load.bin"
    sleep "$interval_s"
    wait "${load_pids[@]}" 2>/dev/null || true
done
"$exporter" --version 2>&1 | head -1 >"$work_dir/version.txt"
cat "$work_dir/version.txt"
