# The Helm chart (charts/modelrollout), container images, and a kind cluster to try them on.
#
# chart-crds and chart-lint run anywhere (helm is built from the Go module proxy and cached).
# image and kind-* need a container engine and kind; they are the path on a laptop (docs/kind.md).

CHART := charts/modelrollout
CHART_CRD := $(CHART)/files/crd.yaml
# helm is built on first use; only its toolset, not the whole control plane.
HELM = $(shell hack/build-tools.sh helm | sed -n 's/^helm=//p')/helm
# The chart declares kubeVersion >=1.27; helm's offline default (1.20) would refuse to render it.
CHART_KUBE_VERSION ?= 1.30.0

CONTAINER_ENGINE ?= docker
IMAGE_REGISTRY ?= ghcr.io/modelrollout
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART)/Chart.yaml)
OPERATOR_IMAGE := $(IMAGE_REGISTRY)/operator:$(IMAGE_TAG)
SERVING_IMAGE := $(IMAGE_REGISTRY)/modelserver:$(IMAGE_TAG)

KIND ?= kind
KUBECTL ?= kubectl
KIND_CLUSTER ?= modelrollout
KIND_NAMESPACE ?= modelrollout-system

.PHONY: chart-crds
chart-crds: crds ## copy the generated CRD into the chart (charts/modelrollout/files/crd.yaml)
	cp crds/modeldeployments.modelrollout.io.yaml $(CHART_CRD)

.PHONY: chart-lint
chart-lint: ## helm lint and helm template the chart with every values file in charts/modelrollout/ci
	@cmp -s crds/modeldeployments.modelrollout.io.yaml $(CHART_CRD) || \
		{ echo "$(CHART_CRD) differs from crds/: run 'make chart-crds'"; exit 1; }
	@helm="$(HELM)"; set -e; for values in $(CHART)/ci/*.yaml hack/kind/values.yaml; do \
		echo "== $$values"; \
		"$$helm" lint --strict --kube-version $(CHART_KUBE_VERSION) -f "$$values" $(CHART); \
		"$$helm" template lint-release $(CHART) --kube-version $(CHART_KUBE_VERSION) \
			--namespace modelrollout-system -f "$$values" >/dev/null; \
	done

.PHONY: image
image: ## build the operator and model server images (needs docker or CONTAINER_ENGINE=podman)
	$(CONTAINER_ENGINE) build -f operator/Dockerfile -t $(OPERATOR_IMAGE) operator
	$(CONTAINER_ENGINE) build -f serving-image/Dockerfile -t $(SERVING_IMAGE) serving-image

.PHONY: image-gpu
image-gpu: ## build the GPU model server image (onnxruntime-gpu, CUDA from the wheels: ~3 GB)
	$(CONTAINER_ENGINE) build -f serving-image/Dockerfile --build-arg ONNXRUNTIME=onnxruntime-gpu \
		-t $(SERVING_IMAGE)-gpu serving-image

.PHONY: kind-up
kind-up: ## create a kind cluster with a CPU worker and a labelled, tainted fake GPU worker
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config hack/kind/config.yaml --wait 120s
	@# kind cannot declare extended resources; advertise four fake GPUs the documented way
	@# (a node status patch) so GPU-tier pods schedule. They run on the CPU like any other.
	@for node in $$($(KUBECTL) --context kind-$(KIND_CLUSTER) get nodes \
			-l nvidia.com/gpu.present=true -o name); do \
		$(KUBECTL) --context kind-$(KIND_CLUSTER) patch "$$node" --subresource=status \
			--type=merge -p '{"status":{"capacity":{"nvidia.com/gpu":"4"}}}' >/dev/null; \
		echo "$$node: nvidia.com/gpu=4 advertised"; \
	done

.PHONY: kind-load
kind-load: ## load the images built by `make image` into the kind cluster
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; set -e; \
	for img in $(OPERATOR_IMAGE) $(SERVING_IMAGE); do \
		$(CONTAINER_ENGINE) save -o "$$tmp/image.tar" "$$img"; \
		$(KIND) load image-archive "$$tmp/image.tar" --name $(KIND_CLUSTER); \
		echo "loaded $$img"; \
	done

.PHONY: kind-install
kind-install: ## helm upgrade --install the chart into the kind cluster (hack/kind/values.yaml)
	$(HELM) upgrade --install modelrollout $(CHART) \
		--kube-context kind-$(KIND_CLUSTER) --namespace $(KIND_NAMESPACE) --create-namespace \
		-f hack/kind/values.yaml \
		--set image.repository=$(IMAGE_REGISTRY)/operator --set image.tag=$(IMAGE_TAG) \
		--set operator.servingImage.repository=$(IMAGE_REGISTRY)/modelserver \
		--set operator.servingImage.tag=$(IMAGE_TAG) --wait --timeout 5m

.PHONY: kind-down
kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
