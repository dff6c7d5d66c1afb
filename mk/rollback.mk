# Rollback benchmark (issue "Progressive canary rollouts", Targets): on the real parts (local
# control plane, operator, model server processes, Prometheus, weighted gateway), regression
# onset to canary weight 0 over ROLLBACK_BENCH_REGRESSION trials and false rollbacks over
# ROLLBACK_BENCH_HEALTHY healthy trials with latency noise. Writes bench/results/rollback-<date>.md.

ROLLBACK_BENCH_REGRESSION ?= 10
ROLLBACK_BENCH_HEALTHY ?= 20
# Two trials at a time overloaded the 2-core machine (a third of the requests dropped, canary
# windows short of minRequests); one at a time takes about half an hour.
ROLLBACK_BENCH_PARALLEL ?= 1

.PHONY: bench-rollback
bench-rollback: venv tools prometheus ## rollback benchmark: regression detection time, false rollbacks
	$(PY) -m bench.rollback.run --regression $(ROLLBACK_BENCH_REGRESSION) \
		--healthy $(ROLLBACK_BENCH_HEALTHY) --parallel $(ROLLBACK_BENCH_PARALLEL) --out bench/results
