#!/usr/bin/env bash
# Every short figure of docs/performance.md, one run after another (about five
# minutes). Build first, and keep the machine otherwise idle while it runs:
#
#   cargo build --release --bin switchboard --example loadgen
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test benches/figures.sh | tee figures.log
#
# The 10-minute soak (K) is separate:
#   target/release/examples/loadgen --db postgres --duration 600 --sample-every 30 --retention-days 0.002
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL to a Postgres the load generator may create databases on}"
cd "$(dirname "$0")/.."
loadgen=target/release/examples/loadgen
run() {
    echo
    echo "### loadgen $*"
    "$loadgen" "$@" 2>&1 | grep -v '^#'
}
run --db postgres --duration 10 --ceilings                                # P1
run --db postgres --duration 10 --ceilings                                # P1, again
run --db postgres --rate 1200 --duration 10                               # P2 (about half of P1)
run --db postgres --sender-only --messages 20000 --contacts 4000          # P3, P4
run --db postgres --sender-only --twilio-latency-ms 100 --messages 10000  # P5
run --db sqlite --duration 10 --ceilings                                  # S1
run --db sqlite --duration 10 --ceilings                                  # S1, again
run --db sqlite --rate 1400 --duration 10                                 # S2 (about half of S1)
run --db sqlite --sender-only --messages 20000 --contacts 4000            # S3
run --db postgres --duration 10 --script                                  # P6: every webhook runs Rhai
run --db sqlite --duration 10 --script                                    # S4: the same on SQLite
run --idle-rss --bots 1000                                                # M1
for variation in "--contacts 50" "--contacts 10000" "--bots 100" "--body-bytes 1000"; do
    # shellcheck disable=SC2086 # each variation is two words on purpose
    run --db postgres --duration 5 $variation                             # variations
done
