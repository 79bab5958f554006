# Two commands do all set-up on a machine with only Python: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The AudioSet files are never part of the repo: use ../shared/audioset when it is there (CI, development),
# otherwise the loader's own resolution (environment variables, cache, download).
SHARED_AUDIOSET := $(abspath ../shared/audioset)
ifneq ($(wildcard $(SHARED_AUDIOSET)/ontology.json),)
export SPA_ONTOLOGY ?= $(SHARED_AUDIOSET)/ontology.json
export SPA_CLASS_LABELS ?= $(SHARED_AUDIOSET)/class_labels_indices.csv
# Everything the demo needs is then local; elsewhere it may download the two ontology files once.
DEMO_ENV := HF_HUB_OFFLINE=1
endif

.PHONY: install test demo real-sounds lint bench clean

$(STAMP): pyproject.toml requirements-peers.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,demo,trackers]"
	# The peers' own code, for the backbone equivalence tests (DESIGN §8); hear21passt without its CUDA deps.
	$(PY) -m pip install -q -r requirements-peers.txt
	$(PY) -m pip install -q --no-deps hear21passt==0.0.26
	$(VENV)/bin/spa-install-metric
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

demo: $(STAMP)
	$(DEMO_ENV) $(PY) recipes/demo.py

# Real recordings from seven pinned Debian packages (apt-get download into the cache), as AudioSet-format builds:
# outputs/real_sounds/{sources,mixtures}. A second run with the same inputs does nothing.
real-sounds: $(STAMP)
	$(DEMO_ENV) $(PY) recipes/build_real_sounds.py --output outputs/real_sounds

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_omap.py

clean:
	rm -rf $(VENV) build *.egg-info
