# The local real node (hack/realnode.py): Debian's container runtime and networking packages, and
# the images built here without a registry (hack/images.py). Linux and root only; everything
# else in the project runs without them (kwok nodes only).

NODE_PACKAGES := containerd runc containernetworking-plugins iptables iproute2 conntrack umoci \
	buildah debootstrap gcc libc6-dev

.PHONY: node-packages
node-packages: ## install Debian's containerd, runc, CNI plugins, iptables, buildah, umoci, debootstrap
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Status}\n' $(NODE_PACKAGES) 2>/dev/null \
		| awk '$$2 != "installed" {print $$1}'; \
		for p in $(NODE_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi

.PHONY: node-images
node-images: venv node-packages ## build the base, pause, modelserver and operator images here (cached)
	$(PY) -m hack.images build

# The integration tests start the real node under CI (unless MODELROLLOUT_REAL_NODE=0) or with
# MODELROLLOUT_REAL_NODE=1 (tests/integration/conftest.py): its packages come first then.
ifeq ($(MODELROLLOUT_REAL_NODE),1)
REAL_NODE_DEPS := node-packages
else ifneq ($(CI),)
ifneq ($(MODELROLLOUT_REAL_NODE),0)
REAL_NODE_DEPS := node-packages
endif
endif
test test-integration: $(REAL_NODE_DEPS)

# `make demo` runs on the real node where the machine allows it: as root on Debian-like Linux,
# with the packages installable. Elsewhere it says so and runs kwok-only.
.PHONY: node-packages-if-possible
node-packages-if-possible:
	@if [ "$$(id -u)" = 0 ] && [ "$$(uname -s)" = Linux ] && command -v apt-get >/dev/null; then \
		$(MAKE) --no-print-directory node-packages || \
			echo "the real node's packages could not be installed: the demo runs kwok-only"; \
	fi
demo: node-packages-if-possible
