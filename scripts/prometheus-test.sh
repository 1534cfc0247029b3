#!/usr/bin/env bash
# The chat's /metrics scraped by a real Prometheus: installs Debian's
# prometheus (which brings promtool) when it is missing, then runs the
# metrics tests with the one `cargo test` leaves out, which checks the
# chat's output with `promtool check metrics`, starts its own Prometheus
# on a free port scraping a chat every second, and queries the
# open-connections gauge through Prometheus' HTTP API as members come and
# go. A missing prometheus fails that test; it is never skipped.
#
#   bash scripts/prometheus-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Without its recommended node exporter: the test needs the server alone.
need_apt prometheus --no-install-recommends prometheus
# `cargo test --test metrics` builds no example: build the chat it starts.
cargo build --example chat
cargo test --test metrics -- --include-ignored
