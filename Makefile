# The two commands of the README, and a few more for daily work.
.PHONY: run test stop status setup conformance

run: setup
	scripts/start.sh

test:
	scripts/test.sh

stop:
	scripts/stop.sh

status:
	scripts/status.sh

setup:
	scripts/setup.sh
