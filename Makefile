# GCE Lab. Two commands matter on a fresh machine: `make run` and `make test`.
# Each one creates/updates the virtual environment in .venv with what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test

.PHONY: run test lint lint-docker unit bench clean-venv demo e2e-deps postgres-deps docker-deps docker-test

$(RUN_STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

# Tests also need the optional extras (Ray, psycopg): the Ray executor and PostgreSQL store suites.
$(TEST_STAMP): $(RUN_STAMP) requirements-dev.txt requirements-extras.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt -r requirements-extras.txt
	touch $@

## make run: start the lab (job worker + web app) at http://127.0.0.1:8501; Ctrl-C stops both.
run: $(RUN_STAMP)
	$(BIN)/python -m app

## make test: lint (Python and the Dockerfile), then the whole test suite (browser tests need
## Debian's chromium, the PostgreSQL store tests Debian's postgresql, the compose checks podman;
## all installed when root), then the image built and run with podman (make docker-test).
test: $(TEST_STAMP) e2e-deps postgres-deps docker-deps lint-docker
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory docker-test

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

# The browser tests drive Debian's chromium; install it when missing and we are root, else the
# e2e tests skip and say why.
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else echo "chromium is missing and this is not root: the e2e browser tests will be skipped"; fi; }

# The PostgreSQL store tests start a throwaway server of their own (tests/conftest.py) from
# Debian's postgresql; install it when missing and we are root, else those tests skip and say why.
postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	  else echo "PostgreSQL is missing and this is not root: the PostgreSQL store tests will be skipped"; fi; }

lint-docker: $(TEST_STAMP)
	$(BIN)/hadolint Dockerfile

# Podman (Debian's) for the compose checks in tests/test_docker.py and for make docker-test;
# installed when missing and we are root, else both skip and say why.
docker-deps:
	@bash docker/test.sh --install-only

## make docker-test: build the image (from a Debian base made here with debootstrap) and run it
## as docs/docker.md says: health check, page, a digits comparison, volumes, stop and restart.
docker-test: docker-deps
	@bash docker/test.sh

bench: $(RUN_STAMP)
	$(BIN)/python -m bench.run_all

clean-venv:
	rm -rf $(VENV)
