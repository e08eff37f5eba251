#!/usr/bin/env bash
# Usage: scripts/battle.sh --target URL --login URL [--profile URL] [--out DIR] [--quick]
#          [--slo-p99 MS] [--max-errors PERCENT] [--min-rps R] [--workloads "hot rooms"]
#          [--allow-limits] [--name NAME] [--prometheus URL]
#        scripts/battle.sh compare A/score.json B/score.json ... [--out DIR]
#
# Aims the standard plan (jmeter/chat_load.jmx, open model) at any deployment that speaks
# the contract (docs/contract.md), and writes a score card:
#   1. pre-flight: /health of each URL, a quick contract check (register, log in, create a
#      room, post, read it back, X-Instance), and bursts that find any rate limit which would
#      cap the result (a 429 names the limit and its Retry-After; the run stops unless
#      --allow-limits: the defending team turns on the battle profile, docs/conformance.md);
#   2. per workload (hot room, many rooms), the SLO search: the highest arrival rate with
#      p99 <= --slo-p99 (250 ms, from each request's scheduled arrival), errors < --max-errors
#      (1 %) and >= 99 % of the offered requests sent; grown until a criterion fails, bisected
#      to within 5 %, confirmed by 3 runs;
#   3. DIR/score.md, score.json, score.png (default DIR: results/battle-<UTC time>); with
#      --prometheus (the target's Prometheus, when it runs this implementation's metrics)
#      also timeline.png/.csv: each server's req/s and p99, and CPU, over the run.
# Exit status: 0 every workload met the objective (and reached --min-rps when given),
# 1 it did not, 3 the pre-flight failed (or found a rate limit), 2 bad arguments.
# --quick: a smoke run of about a minute (two short runs per workload, no confirmation).
# `compare` prints a leaderboard of score cards and plots their curves side by side.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/common.sh
source "$root/scripts/lib/common.sh"
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
case ${1:-} in
    -h|--help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
[[ -x $VENV/bin/python ]] || die "no virtualenv at $VENV (run scripts/setup.sh)"
loadtest() { PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.loadtest "$@"; }
if [[ $1 == compare ]]; then
    shift
    loadtest compare "$@"
    exit
fi
command -v java >/dev/null || [[ -x ${JAVA_HOME:-/nonexistent}/bin/java ]] || die "java is needed for JMeter"
"$root/scripts/jmeter-install.sh" >/dev/null
# JMeter starts afresh for every run; C1 alone keeps its JIT's CPU down (docs/load-testing.md).
export JVM_ARGS=${JVM_ARGS--XX:TieredStopAtLevel=1}
exec env PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tools.loadtest battle \
    --command-line "scripts/battle.sh${*:+ $*}" "$@"
