# Scale benchmark (issue "The operator at fleet scale"): N ModelDeployments on the local control
# plane with kwok nodes: time to all Ready against a floor measured in the same run, idle API
# requests, operator CPU and RSS, and a 10% model-version change. Writes
# bench/results/scale-<date>.md (one section per N). Heavy: run it under the heavy lock.
# SCALE_BENCH_N=5000 for the large fleet; SCALE_BENCH_IDLE=60 for a quick run (the recorded
# figure is the 5-minute window). Waits and polls grow with N (bench/scale/rig.py `scaled`).

SCALE_BENCH_N ?= 1000
SCALE_BENCH_IDLE ?= 300
SCALE_BENCH_WORKERS ?= 16
# kube-controller-manager's API rate limit. Kubernetes' default (20/s) makes the controller
# manager, not the operator, the pace of 5,000 Deployments; large clusters raise it, and so does
# the recorded 5,000 run (SCALE_BENCH_CONTROLLER_QPS=200). The floor runs under the same limit.
SCALE_BENCH_CONTROLLER_QPS ?= 20

.PHONY: bench-scale
bench-scale: venv tools ## scale benchmark: N ModelDeployments, Ready vs floor, idle requests, CPU, RSS
	$(PY) -m bench.scale.run --count $(SCALE_BENCH_N) --idle $(SCALE_BENCH_IDLE) \
		--workers $(SCALE_BENCH_WORKERS) --controller-qps $(SCALE_BENCH_CONTROLLER_QPS) \
		--out bench/results
