#!/usr/bin/env bash
# Usage: scripts/jmeter-run.sh [-Jname=value ...] [--plan FILE] --out DIR [-- JMETER_ARGS...]
#
# Runs a JMeter plan headless (default: jmeter/chat_load.jmx) and writes
#   DIR/results.csv   one CSV line per sample (label, responseCode, success, elapsed,
#                     Latency, Connect, timeStamp, bytes, threadName, allThreads, ...,
#                     and the plan's scheduled_ms, returned, served_by)
#   DIR/dashboard/    JMeter's HTML report (open DIR/dashboard/index.html)
#   DIR/jmeter.log    JMeter's log
# then prints a per-label summary. Earlier results in DIR are replaced.
#
# -Jname=value (or -J name=value) sets a plan property; see the plan's comment, e.g.
#   scripts/jmeter-run.sh -Jthreads=20 -Jduration=60 -Jreads_per_write=3 --out /tmp/run1
#   scripts/jmeter-run.sh -Jmodel=open -Jarrival_rate=200 --out /tmp/open1
# Arguments after -- go to jmeter unchanged. JMeter comes from scripts/jmeter-install.sh;
# its JVM gets the flags below for short load runs, then JVM_ARGS from the environment.
# Exits non-zero when JMeter fails, records no sample, or produces no dashboard
# (failed samples alone do not fail the run: read the summary or the report).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
die() { echo "jmeter-run: error: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plan=$here/../jmeter/chat_load.jmx
out=
props=()
extra=()
model=closed

add_prop() {
  case "$1" in
    ?*=*) props+=("-J$1") ;;
    *) die "-J needs name=value, got '$1'" ;;
  esac
  if [ "${1%%=*}" = model ]; then model=${1#*=}; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --plan) [ $# -ge 2 ] || die "--plan needs a file"; plan=$2; shift 2 ;;
    --plan=*) plan=${1#--plan=}; shift ;;
    -J) [ $# -ge 2 ] || die "-J needs name=value"; add_prop "$2"; shift 2 ;;
    -J*) add_prop "${1#-J}"; shift ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

[ -n "$out" ] || { usage >&2; die "--out DIR is required"; }
[ -f "$plan" ] || die "no plan at $plan"
case "$model" in closed|open) ;; *) die "model must be closed or open, not '$model'" ;; esac

jmeter=$("$here/jmeter-install.sh" | tail -n 1)
if [ -z "$jmeter" ] || [ ! -x "$jmeter" ]; then die "jmeter-install.sh gave no usable launcher"; fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
plan=$(cd "$(dirname "$plan")" && pwd)/$(basename "$plan")
results=$out/results.csv
dashboard=$out/dashboard
log=$out/jmeter.log
rm -rf "$results" "$dashboard" "$log"

# Result file: CSV with the fields the dashboard and our reports read. These come
# first so that a -J on the command line can still override them.
save=jmeter.save.saveservice
settings=(
  "-J$save.output_format=csv"
  "-J$save.print_field_names=true"
  "-J$save.default_delimiter=,"
  "-J$save.timestamp_format=ms"
  "-J$save.label=true"
  "-J$save.response_code=true"
  "-J$save.response_message=true"
  "-J$save.successful=true"
  "-J$save.time=true"
  "-J$save.latency=true"
  "-J$save.connect_time=true"
  "-J$save.bytes=true"
  "-J$save.sent_bytes=true"
  "-J$save.thread_name=true"
  "-J$save.thread_counts=true"
  "-J$save.data_type=true"
  "-J$save.assertion_results_failure_message=true"
  "-J$save.url=true"
  "-J$save.idle_time=true"
  "-J$save.response_data=false"
  # The plan's per-sample variables: the open model's arrival (latency is counted from
  # it), the messages a read returned, the server that answered (jmeter/*.groovy).
  "-Jsample_variables=scheduled_ms,returned,served_by"
  "-J$save.subresults=false"
  # Dashboard: one-second points (the default of one minute flattens short runs).
  "-Jjmeter.reportgenerator.overall_granularity=1000"
  # Its scratch files in the run's own directory, not ./temp of the caller: two runs at
  # once (a test beside a scale test) would otherwise delete each other's.
  "-Jjmeter.reportgenerator.temp_dir=$out/dashboard-temp"
  "-Jjmeter.reportgenerator.report_title=chat load ($model model)"
)

# The load generator's JVM lives for one run, and the figures come from its first seconds:
# C1 alone (C2's compiles cost more CPU than they save within a run), methods compiled after
# a fiftieth of the usual calls (the chat requests' code is compiled during the users' setup
# instead of being interpreted through the measured window) and the serial collector (a small
# heap, no concurrent GC threads). With the plan's changes of the same day they took JMeter
# from about 2 to about 1 ms of CPU per request at 100 req/s, from 1.0 to 0.7 at 200 req/s
# (docs/results/2026-12-06-jmeter-cpu). The caller's JVM_ARGS come after these and win
# (another collector: JVM_ARGS="-XX:-UseSerialGC -XX:+UseG1GC").
export JVM_ARGS="-XX:TieredStopAtLevel=1 -XX:CompileThresholdScaling=0.02 -XX:-UseG1GC -XX:+UseSerialGC${JVM_ARGS:+ $JVM_ARGS}"

echo "jmeter-run: JVM_ARGS=$JVM_ARGS $jmeter -n -t $plan ${props[*]:-} -> $out" >&2
status=0
"$jmeter" -n -t "$plan" -l "$results" -j "$log" -e -o "$dashboard" -f \
  "${settings[@]}" ${props[@]+"${props[@]}"} ${extra[@]+"${extra[@]}"} || status=$?
rm -rf "$out/dashboard-temp"

[ "$status" -eq 0 ] || die "jmeter exited with status $status (see $log)"
if [ ! -s "$results" ] || [ "$(wc -l < "$results")" -le 1 ]; then
  die "no sample recorded in $results (see $log)"
fi
if grep -Eq "Error generating the report|ERROR o\.a\.j\.r\.d\." "$log" || [ ! -f "$dashboard/index.html" ]; then
  die "the HTML dashboard was not generated (see $log)"
fi

# Per-label summary (setup labels register/login/read latest are once per user), its p95
# the project's one percentile (tools/loadtest/samples.py), when the project's virtualenv is there.
venv=${VENV:-$here/../.venv}
if [ -x "$venv/bin/python" ]; then
  (cd "$here/.." && "$venv/bin/python" -m tools.loadtest summary "$results")
fi
echo "jmeter-run: results in $results, report in $dashboard/index.html" >&2
