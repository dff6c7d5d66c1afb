# Chaos campaign (bench/chaos/run.py): full rollouts, healthy and bad canaries half and half,
# each with one fault at a seeded moment (operator SIGKILL, kube-apiserver restart, etcd stop,
# Prometheus down or answering errors or empty results, the operator cut off from the API
# server, pods deleted during analysis, the active of two peered replicas killed). Checks the
# outcome, the traffic, recovery time, children and history of every run; writes
# bench/results/chaos-<date>.md. CHAOS_SEED replays a campaign (the seed is printed),
# CHAOS_ARGS passes more (e.g. --only etcd-stop:2, or --short for the version `make test` runs).
# MODELROLLOUT_REAL_NODE=1 (as for the tests) also starts the real node and runs the pod kills
# on it (root, Debian's node packages, one real node per machine).

CHAOS_SEED ?=
CHAOS_ARGS ?=

.PHONY: chaos
chaos: venv tools prometheus $(if $(filter 1,$(MODELROLLOUT_REAL_NODE)),node-packages) ## chaos campaign: rollouts under faults, seeded (CHAOS_SEED), results in bench/results
	nice -n 5 $(PY) -m bench.chaos.run $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS) \
		$(if $(filter 1,$(MODELROLLOUT_REAL_NODE)),--real-node) --out bench/results
