# A Lua interpreter for tests/unit/test_argocd_health.py, which runs docs/argocd-health.lua as
# Argo CD would. Debian's lua5.4; the test also accepts lua5.3.

.PHONY: lua
lua: ## install Debian's lua5.4 (runs the Argo CD health check in the unit tests)
	@command -v lua5.4 >/dev/null || command -v lua5.3 >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lua5.4)
