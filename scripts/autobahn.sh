#!/usr/bin/env bash
# Runs the Autobahn TestSuite cases 1.* to 10.* (through the PyPI package
# kosoku) against the echo example and fails on any case that is not OK or
# INFORMATIONAL. The report lands in target/autobahn/.
#
#   bash scripts/autobahn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=target/venv
out=target/autobahn
if [ ! -x "$venv/bin/kosoku" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kosoku
fi

cargo build --release --example echo
rm -rf "$out" && mkdir -p "$out"
start_example echo "listening on ws://" --addr 127.0.0.1:0
addr=$ADDR

cases=()
for section in 1 2 3 4 5 6 7 9 10; do cases+=(-i "$section.*"); done
timeout 600 "$venv/bin/kosoku" "$addr" "${cases[@]}" -p 4 -o "$out/report" >"$out/kosoku.log" 2>&1 ||
    { cat "$out/kosoku.log"; echo "kosoku failed" >&2; exit 1; }

"$venv/bin/python" - "$out/report/index.json" <<'PY'
import collections, json, sys
index = json.load(open(sys.argv[1]))
counts = collections.Counter()
bad = []
for agent, cases in index.items():
    for case, result in sorted(cases.items()):
        for key in ("behavior", "behaviorClose"):
            verdict = result[key]
            counts[f"{key}={verdict}"] += 1
            if verdict not in ("OK", "INFORMATIONAL"):
                bad.append(f"{case} {key}={verdict}")
total = sum(len(c) for c in index.values())
print(f"autobahn: {total} cases; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
if total < 301:
    bad.append(f"only {total} cases ran, expected 301")
for line in bad:
    print("autobahn: not passing:", line)
sys.exit(1 if bad else 0)
PY

# Graceful shutdown on SIGTERM must exit 0.
stop_example
echo "autobahn: report in $out/report, echo server exited cleanly"
