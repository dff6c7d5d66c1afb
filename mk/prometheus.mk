# Prometheus from Debian, for the local runner (hack/prometheus.py) that the integration tests and
# the demo start on a port of their own. The package also ships a system service; nothing here
# uses it, and a service that cannot start (no init system) must not fail the target as long as
# the binary is installed.

.PHONY: prometheus
prometheus: ## install Debian's prometheus (scrapes the local modelserver processes)
	@command -v prometheus >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
		|| command -v prometheus >/dev/null
