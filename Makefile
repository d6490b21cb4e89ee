# Two commands: `make run` (create the environment, install, start the app) and
# `make test` (create the environment, install, run the tests). Both start from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test chromium benchmarks clean

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps resemblyzer==0.1.4  # only its speaker encoder's weights (Apache-2.0) are read
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run streamlit_app.py

chromium:  # the browser tests drive Debian's Chromium (Playwright's own browser download fails offline)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "Install Chromium first: sudo apt-get install chromium" >&2; exit 1; fi; }

test: $(STAMP) chromium
	$(PY) -m pytest -q -n 2 --dist worksteal

benchmarks: $(STAMP)
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) .pytest_cache
