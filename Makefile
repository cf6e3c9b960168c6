# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install system lint bench clean dist fuzz

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/stcloud db upgrade
	$(VENV)/bin/stcloud serve --host 127.0.0.1 --port 8080 --local-worker --login-link

# Debian packages and other system pieces the tests start (chromium, daemons): listed in
# .ci/apt.d/*.txt and .ci/setup.d/*.sh, installed when missing and we are root; otherwise the
# tests that need them skip with a loud notice (and fail when CI=true).
system:
	@bash .ci/system-deps

# pytest exits 5 when it collected no tests: that is a failure here.
test: install system lint
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests were collected"; exit 1; fi; exit $$rc

# The wheel and the sdist (templates, static, migrations and alembic.ini inside) in dist/.
dist: install
	$(PY) -m build --outdir dist .

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache

# The API fuzzed against its OpenAPI document for longer than `make test` does (docs/api.md).
fuzz: install
	STCLOUD_FUZZ=long $(VENV)/bin/pytest -q -p no:randomly tests/api/test_schemathesis.py
