# The two commands of the README, and a few more for daily work.
VENV ?= .venv
.PHONY: run test test-fast stop status setup lock lint conformance docker-up docker-down vm-test

run: setup
	scripts/start.sh

test:
	scripts/test.sh

# The fast layer alone (marker `fast`): every service's routes in-process with Flask's test
# client, and the chat store, on a real FerretDB; no gunicorn, HAProxy, Docker or VM. Its
# set-up installs only what this layer needs: the virtualenv and FerretDB.
test-fast:
	scripts/test.sh --fast

stop:
	scripts/stop.sh

status:
	scripts/status.sh

setup:
	scripts/setup.sh

# After editing requirements.txt or requirements-dev.txt: write the hash-locked
# requirements.lock and requirements-dev.lock that every install uses.
lock: setup
	scripts/lock.sh

# ruff (lint and format), mypy and shellcheck, with the settings in pyproject.toml and
# .shellcheckrc; every tool runs, and the target fails if any of them found something.
lint: setup
	@status=0; \
	$(VENV)/bin/ruff check || status=1; \
	$(VENV)/bin/ruff format --check || status=1; \
	$(VENV)/bin/mypy || status=1; \
	shellcheck -x scripts/*.sh docker/*.sh || status=1; \
	exit $$status

# make conformance ARGS="--login http://host:4100 --profile http://host:4200 --chat http://host:5000"
conformance:
	scripts/conformance.sh $(ARGS)

# The system in containers: starts a Docker engine if none answers, builds what is missing.
docker-up:
	scripts/docker-stack.sh up

docker-down:
	scripts/docker-stack.sh down

# The boot test alone: a Debian 12 VM, the systemd install, `shutdown -r now`, faults.
vm-test:
	scripts/test.sh tests/test_vm_boot.py
