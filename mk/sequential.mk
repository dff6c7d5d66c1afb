# Sequential analysis simulation (bench/sequential/run.py): false rollbacks over
# SEQUENTIAL_BENCH_HEALTHY healthy rollouts and canary requests until rollback over a grid of
# regressions, for the sequential test and today's fixed windows on the same simulated traffic.
# Writes bench/results/sequential-<date>.md. Pure computation: no cluster needed.

SEQUENTIAL_BENCH_HEALTHY ?= 10000
SEQUENTIAL_BENCH_REGRESSION ?= 100

.PHONY: bench-sequential
bench-sequential: venv ## simulate the sequential canary test against fixed windows (false rollbacks, detection)
	nice -n 10 $(PY) -m bench.sequential.run --healthy $(SEQUENTIAL_BENCH_HEALTHY) \
		--regression $(SEQUENTIAL_BENCH_REGRESSION) --out bench/results
