# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install browser bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/stcloud db upgrade
	$(VENV)/bin/stcloud serve --host 127.0.0.1 --port 8080 --local-worker

# Browser tests need Debian's chromium: installed here when missing and we are root;
# otherwise they are skipped with a loud notice (and fail when CI=true).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "!!! could not install chromium: browser tests will be skipped (or fail with CI=true)"; \
	  else \
	    echo "!!! /usr/bin/chromium missing and not root: browser tests will be skipped (or fail with CI=true)"; \
	  fi; \
	fi

# pytest exits 5 when it collected no tests: that is a failure here.
test: install browser
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests were collected"; exit 1; fi; exit $$rc

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
