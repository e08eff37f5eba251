"""Figures from JMeter load runs: steady-state throughput and latency per run, CPU per
process, and the scale-test report (scripts/scale_test.sh; docs/load-testing.md).

Command line: python -m tools.loadtest --help
"""
