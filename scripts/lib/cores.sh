# shellcheck shell=bash
# Where the scale test's processes run, and how idle cores wait (sourced by scale_test.sh).
#
# Two effects of sharing one small machine that separate small hosts would not have, both
# measured (docs/load-testing.md, "Cores of their own, and idle cores that poll"):
# - A chat server that shares its core with the load generator, the database and HAProxy
#   finds its caches cooled by them on every request.
# - On a virtual machine whose idle cores halt (the cpuidle driver haltpoll with
#   guest_halt_poll_ns=0, as here), each wake-up of a sleeping process is a trip through
#   the hypervisor, and its cost is charged to the processes around it: a loopback round
#   trip between two processes on two cores cost 66-80 us of CPU with halting cores and
#   24-30 us with polling ones. A server at a low rate sleeps before every request and
#   every database answer, so it paid more per request than the same server at a high rate,
#   and more servers (each at a lower rate) cost more per request.

# cores_list FIRST LAST: "FIRST-LAST" or "FIRST" (taskset's list form).
cores_list() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }

# pin_tree CPUS PID: PID, every thread of it and every process below it on CPUS.
pin_tree() {
    local cpus=$1 pid=$2 child
    taskset -a -p -c "$cpus" "$pid" >/dev/null || return 1
    for child in $(ps -o pid= --ppid "$pid"); do pin_tree "$cpus" "$child"; done
}

# hold_idle_poll: asks the kernel (PM QoS, /dev/cpu_dma_latency) for an exit latency of 0
# from idle, so idle cores poll instead of halting, until the calling shell exits. The
# request is held by a process of its own that keeps the file open and ends with the
# shell (tail --pid), so no child of the shell inherits it and nothing outlives the test.
# Sets idle_poll_pid. Fails when the file cannot be opened for writing (not root).
hold_idle_poll() {
    [[ -w /dev/cpu_dma_latency ]] || return 1
    (exec 9> /dev/cpu_dma_latency && printf 0 >&9 && exec tail --pid=$$ -f /dev/null) &
    # shellcheck disable=SC2034  # read by the sourcing script
    idle_poll_pid=$!
}

# idle_state_description: how this machine's idle cores wait by default.
idle_state_description() {
    local driver
    driver=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)
    if [[ $driver == haltpoll && -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ]]; then
        driver="$driver, guest_halt_poll_ns=$(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns)"
    fi
    echo "cpuidle driver $driver"
}
