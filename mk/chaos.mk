# Chaos campaign (bench/chaos/run.py): full rollouts, healthy and bad canaries half and half,
# each with one fault at a seeded moment (operator SIGKILL, kube-apiserver restart, etcd stop,
# Prometheus down or answering errors or empty results, the operator cut off from the API
# server, pods deleted during analysis, the active of two peered replicas killed). Checks the
# outcome, the traffic, recovery time, children and history of every run; writes
# bench/results/chaos-<date>.md. CHAOS_SEED replays a campaign (the seed is printed),
# CHAOS_ARGS passes more (e.g. --only etcd-stop:2, or --short for the version `make test` runs).

CHAOS_SEED ?=
CHAOS_ARGS ?=

.PHONY: chaos
chaos: venv tools prometheus ## chaos campaign: rollouts under faults, seeded (CHAOS_SEED), results in bench/results
	nice -n 5 $(PY) -m bench.chaos.run $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS) \
		--out bench/results
