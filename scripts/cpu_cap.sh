#!/usr/bin/env bash
# Cap the CPU of running processes with a cgroup each, so that servers sharing one machine
# behave like separate small hosts (used by scale_test.sh --cpu-cap).
#
#   cpu_cap.sh check                    which cgroup interface is usable here (exit 1: none)
#   cpu_cap.sh apply NAME CORES PID     put PID and all its descendants (a gunicorn master
#                                       and its workers) in cgroup NAME limited to CORES
#                                       cores (0.25 = a quarter of one core); again = update
#   cpu_cap.sh show                     each cap: its limit, CPU used, time throttled
#   cpu_cap.sh release [NAME ...]       move what still runs back and remove the cgroups
#                                       (all of ours when no NAME is given)
#
# cgroup v2 (cpu.max) is used when its cpu controller can be enabled below the caller's
# cgroup; otherwise cgroup v1 (cpu.cfs_quota_us). Needs root, or a delegated cgroup.
# Environment: CPU_CAP_PARENT (name of the parent cgroup we create, default chatsys-caps),
# CPU_CAP_PERIOD_US (the scheduler period the quota is granted in, 100000: see below).
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
log() { printf 'cpu_cap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CPU_CAP_PARENT=${CPU_CAP_PARENT:-chatsys-caps}
# The quota is CORES x the period, granted per period (the kernel's default period,
# 100 ms: a server capped at 0.25 core may spend 25 ms and then waits up to 75 ms). A
# shorter period makes each wait shorter; docs/load-testing.md says what a 10 ms period
# did to the scale test (the cost per request rose, the p99 grew noisier).
PERIOD_US=${CPU_CAP_PERIOD_US:-100000}
if ! [[ $PERIOD_US =~ ^[0-9]+$ ]] || ((PERIOD_US < 1000 || PERIOD_US > 1000000)); then
    die "CPU_CAP_PERIOD_US must be 1000 to 1000000 (microseconds)"
fi

# Sets mode (v2|v1|none), base (the caller's cgroup directory) and reason (when none).
mode=none base='' reason=''
detect() {
    local v2_mount v1_mount v2_path v1_path
    v2_mount=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)
    v1_mount=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ {print $2; exit}' /proc/self/mounts)
    v2_path=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
    v1_path=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
    if [[ -n $v2_mount && -f $v2_mount/cgroup.controllers ]]; then
        local candidate=$v2_mount${v2_path%/}
        if grep -qw cpu "$candidate/cgroup.controllers" 2>/dev/null; then
            if grep -qw cpu "$candidate/cgroup.subtree_control" 2>/dev/null ||
                { echo +cpu > "$candidate/cgroup.subtree_control"; } 2>/dev/null; then
                mode=v2 base=$candidate
                return 0
            fi
            reason="cgroup v2 at $candidate has the cpu controller but it cannot be enabled for children (processes in that cgroup, or no permission)"
        else
            reason="cgroup v2 at $candidate does not offer the cpu controller (controllers: $(tr '\n' ' ' < "$candidate/cgroup.controllers" 2>/dev/null))"
        fi
    else
        reason="no cgroup v2 file system mounted"
    fi
    if [[ -n $v1_mount ]]; then
        local candidate=$v1_mount${v1_path%/}
        if [[ -w $candidate/cpu.cfs_quota_us || -w $candidate ]] && [[ -f $candidate/cpu.cfs_quota_us ]]; then
            mode=v1 base=$candidate
            return 0
        fi
        reason="$reason; cgroup v1 cpu controller at $candidate is not writable"
    else
        reason="$reason; no cgroup v1 cpu controller mounted"
    fi
    mode=none
}

group_dir() { echo "$base/$CPU_CAP_PARENT/$1"; }

# descendants PID: PID and every process below it.
descendants() {
    local pid=$1 child
    echo "$pid"
    # shellcheck disable=SC2013  # the children files hold space-separated pids
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do descendants "$child"; done
}

apply() {
    local name=$1 cores=$2 root_pid=$3 dir quota pid moved=0
    [[ $name =~ ^[A-Za-z0-9_.@-]+$ ]] || die "cgroup name may hold A-Z a-z 0-9 _ . @ - only"
    [[ $cores =~ ^[0-9]*\.?[0-9]+$ ]] || die "CORES must be a number such as 0.25"
    kill -0 "$root_pid" 2>/dev/null || die "no process $root_pid"
    quota=$(awk -v c="$cores" -v p="$PERIOD_US" 'BEGIN {q = int(c * p + 0.5); if (q < 1000) q = 1000; print q}')
    dir=$(group_dir "$name")
    mkdir -p "$dir"
    if [[ $mode == v2 ]]; then
        grep -qw cpu "$base/$CPU_CAP_PARENT/cgroup.subtree_control" ||
            echo +cpu > "$base/$CPU_CAP_PARENT/cgroup.subtree_control"
        echo "$quota $PERIOD_US" > "$dir/cpu.max"
    else
        echo "$PERIOD_US" > "$dir/cpu.cfs_period_us"
        echo "$quota" > "$dir/cpu.cfs_quota_us"
    fi
    for pid in $(descendants "$root_pid"); do
        # A process may exit between listing and moving; that is fine.
        if { echo "$pid" > "$dir/cgroup.procs"; } 2>/dev/null; then moved=$((moved + 1)); fi
    done
    echo "capped $name at $cores core ($mode, quota ${quota}us per ${PERIOD_US}us): $moved processes"
}

show() {
    local dir name limit usage throttled
    shopt -s nullglob
    printf '%-16s %-6s %-10s %-12s %s\n' NAME CORES PROCESSES CPU_SECONDS THROTTLED_SECONDS
    for dir in "$base/$CPU_CAP_PARENT"/*/; do
        dir=${dir%/}; name=${dir##*/}
        if [[ $mode == v2 ]]; then
            limit=$(awk '{print ($1 == "max") ? "max" : $1 / $2}' "$dir/cpu.max")
            usage=$(awk '$1 == "usage_usec" {printf "%.1f", $2 / 1e6}' "$dir/cpu.stat")
            throttled=$(awk '$1 == "throttled_usec" {printf "%.1f", $2 / 1e6}' "$dir/cpu.stat")
        else
            limit=$(awk -v p="$(cat "$dir/cpu.cfs_period_us")" '{print ($1 < 0) ? "max" : $1 / p}' "$dir/cpu.cfs_quota_us")
            # cpuacct is often a hierarchy of its own; scale_test.sh measures per process anyway.
            usage=$(awk '{printf "%.1f", $1 / 1e9}' "$dir/cpuacct.usage" 2>/dev/null || echo -)
            throttled=$(awk '$1 == "throttled_time" {printf "%.1f", $2 / 1e9}' "$dir/cpu.stat")
        fi
        printf '%-16s %-6s %-10s %-12s %s\n' "$name" "$limit" "$(wc -l < "$dir/cgroup.procs")" "$usage" "$throttled"
    done
}

release() {
    local names=("$@") dir pid pids
    shopt -s nullglob
    if ((${#names[@]} == 0)); then
        for dir in "$base/$CPU_CAP_PARENT"/*/; do dir=${dir%/}; names+=("${dir##*/}"); done
    fi
    for name in ${names[@]+"${names[@]}"}; do
        dir=$(group_dir "$name")
        [[ -d $dir ]] || continue
        mapfile -t pids < "$dir/cgroup.procs"  # read whole before moving any out of it
        for pid in ${pids[@]+"${pids[@]}"}; do
            { echo "$pid" > "$base/cgroup.procs"; } 2>/dev/null || true
        done
        rmdir "$dir" 2>/dev/null || log "could not remove $dir (still busy?)"
    done
    rmdir "$base/$CPU_CAP_PARENT" 2>/dev/null || true
}

command=${1:-}
case $command in
    -h|--help) usage; exit 0 ;;
    check|apply|show|release) shift ;;
    *) usage >&2; exit 2 ;;
esac
detect
if [[ $command == check ]]; then
    if [[ $mode == none ]]; then
        echo "none: $reason"
        exit 1
    fi
    echo "$mode: $base"
    exit 0
fi
[[ $mode != none ]] || die "no usable cgroup CPU controller: $reason"
case $command in
    apply) (($# == 3)) || { usage >&2; exit 2; }; apply "$@" ;;
    show) show ;;
    release) release "$@" ;;
esac
