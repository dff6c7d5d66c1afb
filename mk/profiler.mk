# Profiler benchmark: a generated ~1 GB ONNX model, profiled against a plain read of it
# (bench/profiler/run.py). Writes bench/results/profiler-<date>.md; the model is deleted after.

PROFILER_BENCH_ROUNDS ?= 5

.PHONY: bench-profiler
bench-profiler: venv ## profile a generated ~1 GB ONNX model: time vs a plain read, peak RSS
	$(PY) -m bench.profiler.run --rounds $(PROFILER_BENCH_ROUNDS) --out bench/results
