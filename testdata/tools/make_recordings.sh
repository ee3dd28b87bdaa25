#!/bin/sh
# Regenerate the recordings in testdata/ from the scrape text they are made
# of. Run from anywhere with otelsnap installed (pip install -e .); set
# OTELSNAP to use another command. The outputs are deterministic: running
# this again must leave `git status` clean.
set -eu
cd "$(dirname "$0")/../.."
OTELSNAP=${OTELSNAP:-otelsnap}
PYTHON=${PYTHON:-python3}

# Six-node cluster: the real scrape, then the same scrape 15 s later with
# every counter advanced by the amounts in advance.yaml.
"$PYTHON" testdata/tools/advance_scrape.py \
    testdata/atlhyper-six-nodes/otel_all_nodes.txt \
    testdata/atlhyper-six-nodes/advance.yaml \
    > testdata/atlhyper-six-nodes/otel_all_nodes_plus15s.txt
$OTELSNAP convert --out testdata/six-nodes.otlprec --strip-prefix otel_ \
    testdata/atlhyper-six-nodes/otel_all_nodes.txt@2025-12-22T10:00:00Z \
    testdata/atlhyper-six-nodes/otel_all_nodes_plus15s.txt@+15s

# Real node_exporter on one machine under load: five scrapes at the times
# (Unix ms) in times.txt. The text has no job/instance labels; a collector
# adds them from its scrape config.
$OTELSNAP convert --out testdata/node-exporter-local.otlprec \
    --times testdata/node-exporter-local/times.txt --time-unit ms \
    --job node-exporter --instance 127.0.0.1:9100
