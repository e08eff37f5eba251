# The two commands of the README, and a few more for daily work.
VENV ?= .venv
.PHONY: run test test-fast test-postgresql stop status setup lock lint conformance docker-up docker-down swarm-test vm-test

run: setup
	scripts/start.sh

test:
	scripts/test.sh

# The fast layer alone (marker `fast`): every service's routes in-process with Flask's test
# client, and the chat store, on a real FerretDB; no gunicorn, HAProxy, Docker or VM. Its
# set-up installs only what this layer needs: the virtualenv and FerretDB.
test-fast:
	scripts/test.sh --fast

# The fast, contract and system layers again with every FerretDB they start on PostgreSQL
# (docs/postgresql.md). The deploy layer is left out: its images, units and VM run FerretDB
# on SQLite.
test-postgresql:
	FERRETDB_HANDLER=postgresql scripts/test.sh tests/fast tests/contract tests/system

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

# ruff (lint and format), mypy, shellcheck and eslint (the web client's modules), with the
# settings in pyproject.toml, .shellcheckrc and web/eslint.config.mjs; then the operations
# files, offline: scripts/check-config.sh runs `haproxy -c` of conf/haproxy/haproxy.cfg with
# the defaults and with every `.if` branch taken, and `systemd-analyze verify` of
# conf/systemd's units as the installer lays them out, which catches an unknown or misspelt
# directive, a bad value or specifier, a missing dependency and an ExecStart= that is no
# executable; scripts/kube-lint.sh renders the Kubernetes manifests and checks them against
# the API's schema. Every tool runs, and the target fails if any of them found something.
lint: setup
	@status=0; \
	$(VENV)/bin/ruff check || status=1; \
	$(VENV)/bin/ruff format --check || status=1; \
	$(VENV)/bin/mypy || status=1; \
	shellcheck -x scripts/*.sh scripts/lib/*.sh docker/*.sh conf/prometheus/*.sh || status=1; \
	(cd web && node_modules/.bin/eslint) || status=1; \
	scripts/check-config.sh || status=1; \
	scripts/kube-lint.sh || status=1; \
	exit $$status

# make conformance ARGS="--login http://host:4100 --profile http://host:4200 --chat http://host:5000"
conformance:
	scripts/conformance.sh $(ARGS)

# The system in containers: starts a Docker engine if none answers, builds what is missing.
docker-up:
	scripts/docker-stack.sh up

docker-down:
	scripts/docker-stack.sh down

# The three-node swarm alone (scripts/swarm-nodes.sh: three engines in network namespaces of
# their own, the stack across them): spread, the contract, a rolling update, scaling and a
# killed node, each under load; about 4 minutes. Needs root and dockerd.
swarm-test:
	scripts/test.sh tests/deploy/test_swarm_nodes.py

# The boot test alone: a Debian 12 VM, the systemd install, `shutdown -r now`, faults, a power cut.
vm-test:
	scripts/test.sh tests/deploy/test_vm_boot.py
