# Serving image benchmark (see serving-image/README.md, "Performance").

KSERVE_VENV := bench/.venv-kserve
BENCH_SECONDS ?= 10

# kserve pins its own web stack, so it lives apart from .venv (and out of git).
$(KSERVE_VENV)/.installed:
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	@echo '*' > $(KSERVE_VENV)/.gitignore
	$(KSERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/pip install --quiet "kserve>=0.13,<1" "onnxruntime>=1.18,<2" "numpy>=1.26,<3"
	@touch $@

# MLServer at its best: with httptools (from PyPI alone it runs on h11), in its own venv too.
MLSERVER_VENV := bench/.venv-mlserver
$(MLSERVER_VENV)/.installed:
	@test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	@echo '*' > $(MLSERVER_VENV)/.gitignore
	$(MLSERVER_VENV)/bin/pip install --quiet --upgrade pip
	$(MLSERVER_VENV)/bin/pip install --quiet "mlserver>=1.6,<2" httptools "onnxruntime>=1.18,<2" "numpy>=1.26,<3"
	@touch $@

$(VENV)/.bench-serving: $(STAMP) bench/serving/requirements.txt
	$(PY) -m pip install --quiet -r bench/serving/requirements.txt
	@touch $@

.PHONY: bench-serving
bench-serving: venv $(VENV)/.bench-serving $(KSERVE_VENV)/.installed $(MLSERVER_VENV)/.installed ## benchmark the model server against raw onnxruntime, the transport floor, MLServer and KServe
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(PY) -m bench.serving.run --seconds $(BENCH_SECONDS)

.PHONY: bench-serving-protocols
bench-serving-protocols: venv $(VENV)/.bench-serving ## only the REST-beside-gRPC part of bench-serving, recorded in bench/results/
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench.serving.protocols $(BENCH_SECONDS) bench/results/serving-protocols-$$(date -u +%F).md

.PHONY: bench-serving-instructions
bench-serving-instructions: venv $(VENV)/.bench-serving ## only the instructions-per-request part of bench-serving (callgrind: floor, modelserver, with counters), printed
	@command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(PY) -m bench.serving.instructions

.PHONY: bench-serving-distribution
bench-serving-distribution: venv $(VENV)/.bench-serving ## only the output/input counters part of bench-serving (off vs on), recorded in bench/results/
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench.serving.distribution $(BENCH_SECONDS) bench/results/serving-distribution-$$(date -u +%F).md
