#!/usr/bin/env bash
# Usage: scripts/jmeter-gui.sh [-Jname=value ...] [PLAN]
#
# Opens PLAN (default: jmeter/chat_load.jmx) in the JMeter GUI, to read or edit
# it. -J properties are the plan's knobs (see its comment), e.g. -Jchat_port=4001.
# JMeter comes from scripts/jmeter-install.sh; its log goes to
# ${TMPDIR:-/tmp}/jmeter-gui.log. Load tests are run headless with
# scripts/jmeter-run.sh, never from the GUI.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
die() { echo "jmeter-gui: error: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plan=$here/../jmeter/chat_load.jmx
props=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -J) [ $# -ge 2 ] || die "-J needs name=value"; props+=("-J$2"); shift 2 ;;
    -J?*=*) props+=("$1"); shift ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) plan=$1; shift ;;
  esac
done

[ -f "$plan" ] || die "no plan at $plan"

if [ -z "${DISPLAY:-}" ]; then
  cat >&2 <<'EOF'
jmeter-gui: no DISPLAY is set, so the JMeter GUI cannot open a window here.
  - on a desktop, run this from a terminal of that desktop session;
  - over ssh, connect with X forwarding (ssh -X) and run it again;
  - on a machine without a screen, run the plan headless instead:
      scripts/jmeter-run.sh --out DIR        (HTML report in DIR/dashboard)
    or give the GUI a virtual display: xvfb-run -a scripts/jmeter-gui.sh
EOF
  exit 1
fi

jmeter=$("$here/jmeter-install.sh" | tail -n 1)
if [ -z "$jmeter" ] || [ ! -x "$jmeter" ]; then die "jmeter-install.sh gave no usable launcher"; fi

# Swing text antialiasing (darklaf warns when it is not set).
export JVM_ARGS="-Dawt.useSystemAAFontSettings=on ${JVM_ARGS:-}"
exec "$jmeter" -t "$plan" -j "${TMPDIR:-/tmp}/jmeter-gui.log" ${props[@]+"${props[@]}"}
