"""Figures from JMeter load runs: steady-state throughput and latency per run, CPU per
process, and the scale-test report (scripts/scale_test.sh; docs/load-testing.md); HAProxy's
statistics CSV read by column name (`haproxy_stats`, for the tests and the scripts too).

Command line: python -m loadtest {step,max,report,monitor,reset-db} ...
"""
