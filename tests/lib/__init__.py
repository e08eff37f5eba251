"""The test harness (real FerretDB, gunicorn and HAProxy on free ports: harness.py) and the
helpers the test layers share. The benchmarks under tools/ start their stacks with it too."""
