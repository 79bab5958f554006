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

.PHONY: install test test-slow test-all demo real-sounds spa-study lint bench clean

$(STAMP): pyproject.toml requirements-peers.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,demo,export,trackers]"
	# The peers' own code, for the backbone equivalence tests (DESIGN §8); hear21passt without its CUDA deps.
	$(PY) -m pip install -q -r requirements-peers.txt
	$(PY) -m pip install -q --no-deps hear21passt==0.0.26
	$(VENV)/bin/spa-install-metric
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers, one test file each at a time (--dist loadfile keeps a file's module fixtures in one process),
# the longest files first (tests/conftest.py's SLOW_FIRST; --no-loadscope-reorder keeps that order, where xdist would
# order files by their number of tests). One thread per process, the workers' and their subprocesses': most of the
# suite's time is single-threaded work (subprocesses importing torch, decoding, small models), and a thread per core
# in every process oversubscribed the two cores (measured: 30% less time with one).
# `make test` leaves out the tests marked `slow` (whole recipes and doc pages run end to end, runs in several processes
# or killed and resumed, the wheel installed in a fresh venv: 40 % of the suite's time, most of it interpreters
# starting; one two-process training run stays in); `make test-slow` runs them, and CI runs both. `pytest tests` runs
# everything.
PYTEST = HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST) -m "not slow" tests

test-slow: $(STAMP)
	$(PYTEST) -m slow tests

# Both in one pass (what CI runs): the two workers share out every file, 3 min less than the two in turn.
test-all: $(STAMP)
	$(PYTEST) tests

# The real recordings first; where they cannot be had (no apt-get and no .deb files in the cache), the demo says so
# and falls back to the synthetic set.
demo: $(STAMP)
	$(MAKE) real-sounds || echo "make demo: the real-recording set could not be built (see above); the demo falls back to the synthetic set."
	$(DEMO_ENV) $(PY) recipes/demo.py

# Real recordings from seven pinned Debian packages (apt-get download into the cache), as AudioSet-format builds:
# outputs/real_sounds/{sources,mixtures}. A second run with the same inputs does nothing.
real-sounds: $(STAMP)
	$(DEMO_ENV) $(PY) recipes/build_real_sounds.py --output outputs/real_sounds

# recipes/spa_study.py on both tasks (about 90 minutes on 2 busy cores): writes recipes/results/spa_study.json.
spa-study: real-sounds
	$(DEMO_ENV) $(PY) recipes/build_demo_dataset.py --output outputs/synthetic/data --duration 2
	$(DEMO_ENV) $(PY) recipes/spa_study.py --task real --jobs 2 --variants wo_spa paper contrastive frozen geometry contrastive_centred
	$(DEMO_ENV) $(PY) recipes/spa_study.py --task synthetic --jobs 2 --variants wo_spa paper contrastive frozen geometry

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_omap.py

clean:
	rm -rf $(VENV) build *.egg-info
