"""The Helm chart, linted and rendered by the real helm binary (built by hack/build-tools.sh).

Asserts on the rendered objects: the restricted security context, RBAC without wildcards in
both scopes, the CRD switch and its byte-for-byte source, peering, monitoring objects checked
by promtool, and a values schema that turns typos into errors naming them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.localcluster import build_tools
from hack.prometheus import INSTALL_HINT
from modelrollout.hardware.thresholds import HardwareThresholds
from modelrollout.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelrollout"
CRD_FILE = REPO / "crds" / "modeldeployments.modelrollout.io.yaml"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KIND_VALUES = REPO / "hack" / "kind" / "values.yaml"
ALL_VALUES = [*CI_VALUES, KIND_VALUES]
NAMESPACE = "modelrollout-system"
RELEASE = "mr"
# The chart requires Kubernetes >= 1.27; helm's offline default is older.
KUBE_VERSION = "1.30.0"

Obj = dict[str, Any]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return build_tools("helm")["helm"] / "helm"


def run_helm(helm_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def render(
    helm_bin: Path,
    *values: Path,
    sets: tuple[str, ...] = (),
    strings: tuple[str, ...] = (),
    namespace: str = NAMESPACE,
) -> list[Obj]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    for item in strings:
        args += ["--set-string", item]
    result = run_helm(helm_bin, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(helm_bin: Path, *sets: str) -> str:
    args = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    for item in sets:
        args += ["--set", item]
    result = run_helm(helm_bin, *args)
    assert result.returncode != 0, f"helm template {' '.join(sets)} should have failed"
    return result.stderr


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str) -> Obj:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(deployment: Obj) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def rules_of(objs: list[Obj], kind: str) -> list[Obj]:
    return [rule for role in of_kind(objs, kind) for rule in role["rules"]]


def grants(rules: list[Obj]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.fixture(scope="module")
def default(helm_bin: Path) -> list[Obj]:
    return render(helm_bin)


# --- lint and render every values file -------------------------------------------------------


@pytest.mark.parametrize("values", ALL_VALUES, ids=lambda p: p.name)
def test_lint(helm_bin: Path, values: Path) -> None:
    result = run_helm(
        helm_bin, "lint", "--strict", "--kube-version", KUBE_VERSION, "-f", str(values), str(CHART)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values", ALL_VALUES, ids=lambda p: p.name)
def test_render_is_well_formed(helm_bin: Path, values: Path) -> None:
    objs = render(helm_bin, values)
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "two objects share a kind, namespace and name"
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "modelrollout"
    one(objs, "Deployment")


@pytest.mark.parametrize("values", ALL_VALUES, ids=lambda p: p.name)
def test_restricted_security_context(helm_bin: Path, values: Path) -> None:
    dep = one(render(helm_bin, values), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert host not in pod
    assert all("hostPath" not in v for v in pod["volumes"])
    # A read-only root still leaves a scratch directory.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]

    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["health"]) == env_of(dep)["MODELROLLOUT_HEALTH_PORT"]
    assert str(ports["metrics"]) == env_of(dep)["MODELROLLOUT_METRICS_PORT"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("values", ALL_VALUES, ids=lambda p: p.name)
def test_rbac_has_no_wildcards(helm_bin: Path, values: Path) -> None:
    objs = render(helm_bin, values)
    for rule in rules_of(objs, "ClusterRole") + rules_of(objs, "Role"):
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {key}: {rule}"
            assert all("*" not in item for item in rule[key]), rule
        # Verbs that hand out more rights than they name.
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        if "secrets" in rule["resources"]:
            # Only with rbac.hookHeaderSecrets, and only to read one by name.
            assert rule["verbs"] == ["get"], rule
            assert rule["resources"] == ["secrets"], rule
        assert "nonResourceURLs" not in rule, rule


# --- the workload ------------------------------------------------------------------------------


def test_defaults(default: list[Obj]) -> None:
    dep = one(default, "Deployment")
    assert dep["metadata"]["name"] == "mr-modelrollout"
    assert dep["metadata"]["namespace"] == NAMESPACE
    assert dep["spec"]["replicas"] == 1
    # Standalone replicas don't coordinate, so an update must not overlap old and new.
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(default, "ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/modelrollout/operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert env_of(dep) == {
        "MODELROLLOUT_NAMESPACES": "[]",
        "MODELROLLOUT_SERVING_IMAGE_GPU": "ghcr.io/modelrollout/modelserver:0.1.0-gpu",
        "MODELROLLOUT_IMAGE_VOLUMES": "false",
        "MODELROLLOUT_SERVING_IMAGE": "ghcr.io/modelrollout/modelserver:0.1.0",
        "MODELROLLOUT_PROMETHEUS_URL": "http://prometheus-server.monitoring.svc:9090",
        "MODELROLLOUT_RESYNC_SECONDS": "300",
        "MODELROLLOUT_WORKERS": "16",
        "MODELROLLOUT_HOOK_CONCURRENCY": "8",
        "MODELROLLOUT_NOTIFY_QUEUE_SIZE": "256",
        "MODELROLLOUT_METRICS_PORT": "8000",
        "MODELROLLOUT_HEALTH_PORT": "8081",
        "MODELROLLOUT_BIND_ADDRESS": "0.0.0.0",
        "MODELROLLOUT_LOG_FORMAT": "json",
        # Always: kopf otherwise looks the numeric user up in /etc/passwd and exits (found
        # when the image first ran under a real kubelet).
        "POD_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    for absent in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "Role", "ClusterKopfPeering"):
        assert not of_kind(default, absent), absent

    svc = one(default, "Service")
    selector = dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_values_reach_the_pod(helm_bin: Path) -> None:
    objs = render(helm_bin, CHART / "ci" / "restricted-values.yaml")
    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == (
        "registry.example.com/mirror/modelrollout-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry-example-com"}]
    assert pod["serviceAccountName"] == "modelrollout-operator"
    assert pod["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "node-role.example.com/system": "true",
    }
    assert pod["tolerations"][0]["key"] == "node-role.example.com/system"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    env = env_of(dep)
    assert env["MODELROLLOUT_SERVING_IMAGE"] == "registry.example.com/mirror/modelserver:0.1.0-cuda"
    assert env["MODELROLLOUT_RESYNC_SECONDS"] == "60"
    assert env["MODELROLLOUT_LOG_FORMAT"] == "plain"
    assert env["HTTPS_PROXY"] == {"secretKeyRef": {"name": "egress-proxy", "key": "url"}}
    # Neither RBAC, nor a ServiceAccount, nor a CRD, nor a Service: all managed elsewhere.
    assert {o["kind"] for o in objs} == {"Deployment"}


def test_extra_env_comes_last_and_wins(helm_bin: Path) -> None:
    dep = one(
        render(
            helm_bin,
            strings=(
                "operator.extraEnv[0].name=MODELROLLOUT_RESYNC_SECONDS",
                "operator.extraEnv[0].value=5",
            ),
        ),
        "Deployment",
    )
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    # Kubernetes resolves duplicate names to the last entry.
    assert names[-1] == "MODELROLLOUT_RESYNC_SECONDS"
    assert container["env"][-1]["value"] == "5"


def test_scheduling_values(helm_bin: Path) -> None:
    dep = one(render(helm_bin, CHART / "ci" / "ha-values.yaml"), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert pod["priorityClassName"] == "system-cluster-critical"


def _schema_for_chart(node: Any) -> Any:
    """A pydantic JSON schema as values.schema.json holds it: draft-07, definitions prefixed
    `hardware`, optional fields as `[type, "null"]`, no titles or defaults."""
    if isinstance(node, list):
        return [_schema_for_chart(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key in ("title", "default", "$defs"):
            continue
        if key == "$ref":
            out[key] = "#/definitions/hardware" + value.rsplit("/", 1)[1]
        elif key == "anyOf" and len(value) == 2 and {"type": "null"} in value:
            (other,) = [v for v in value if v != {"type": "null"}]
            out |= _schema_for_chart(other)
            out["type"] = [other["type"], "null"]
        else:
            out[key] = _schema_for_chart(value)
    return out


def test_hardware_schema_follows_the_operator() -> None:
    """operator.hardware is checked at install against the operator's own settings model."""
    live = HardwareThresholds.model_json_schema()
    expected = {f"hardware{k}": _schema_for_chart(v) for k, v in live.get("$defs", {}).items()}
    expected["hardwareThresholds"] = _schema_for_chart(live)
    schema = json.loads((CHART / "values.schema.json").read_text())
    chart = {k: v for k, v in schema["definitions"].items() if k.startswith("hardware")}
    assert chart == expected, (
        "values.schema.json's hardware definitions drifted from HardwareThresholds; replace them "
        f"with:\n{json.dumps(expected, indent=2)}"
    )
    operator = schema["properties"]["operator"]["properties"]
    assert operator["hardware"] == {"$ref": "#/definitions/hardwareThresholds"}


def test_hardware_setting_reaches_the_operator(helm_bin: Path) -> None:
    values = CHART / "ci" / "gpu-values.yaml"
    env = env_of(one(render(helm_bin, values), "Deployment"))
    # The operator parses the variable with the same model, so this is what it will run with.
    thresholds = HardwareThresholds.model_validate_json(env["MODELROLLOUT_HARDWARE"])
    assert thresholds.gpu_min_gflops == 5
    assert thresholds.allow_cpu_fallback is False
    assert thresholds.gpu.cpu == 4
    assert thresholds.gpu.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert thresholds.gpu.tolerations[0].operator == "Exists"
    assert thresholds.cpu_small == HardwareThresholds().cpu_small

    error = render_error(helm_bin, "operator.hardware.gpu_min_gflop=1")
    assert "'gpu_min_gflop'" in error


# --- RBAC scopes -------------------------------------------------------------------------------

NAMESPACED_GRANTS = {
    ("modelrollout.io", "modeldeployments"): {"get", "list", "watch", "patch", "update"},
    ("modelrollout.io", "modeldeployments/status"): {"get", "patch", "update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    },
    ("policy", "poddisruptionbudgets"): {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    },
    ("", "pods"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create", "patch"},
    ("batch", "jobs"): {"get", "create"},
    ("", "configmaps"): {"get"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "patch"},
    ("networking.istio.io", "virtualservices"): {"get", "list", "watch", "patch"},
}
CLUSTER_READS = {
    ("", "nodes"): {"get", "list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def test_cluster_scope(default: list[Obj]) -> None:
    assert not of_kind(default, "Role")
    assert not of_kind(default, "RoleBinding")
    role = one(default, "ClusterRole")
    binding = one(default, "ClusterRoleBinding")
    # Qualified by namespace: the same release name in two namespaces must not collide.
    assert role["metadata"]["name"] == f"{NAMESPACE}-mr-modelrollout"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mr-modelrollout", "namespace": NAMESPACE}
    ]
    assert grants(role["rules"]) == NAMESPACED_GRANTS | CLUSTER_READS


def test_notifiers_come_from_secrets_as_files(helm_bin: Path) -> None:
    sets = (
        "notifications.notifiers[0].name=ml-slack",
        "notifications.notifiers[0].type=slack",
        "notifications.notifiers[0].urlSecret.name=slack-webhook",
        "notifications.notifiers[1].name=audit",
        "notifications.notifiers[1].urlSecret.name=audit-hook",
        "notifications.notifiers[1].urlSecret.key=endpoint",
    )
    dep = one(render(helm_bin, sets=sets), "Deployment")
    env = env_of(dep)
    settings = OperatorSettings.model_validate(
        {"notifiers": json.loads(env["MODELROLLOUT_NOTIFIERS"]), "notify_queue_size": 256}
    )
    assert [(n.name, n.type, n.timeout_seconds) for n in settings.notifiers] == [
        ("ml-slack", "slack", 10),
        ("audit", "webhook", 10),
    ]
    assert (
        str(settings.notifiers[1].url_file) == "/var/run/secrets/modelrollout/notifiers/audit/url"
    )
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["notifier-audit"]["secret"] == {
        "secretName": "audit-hook",
        "items": [{"key": "endpoint", "path": "url"}],
    }
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["notifier-ml-slack"] == "/var/run/secrets/modelrollout/notifiers/ml-slack"
    error = render_error(helm_bin, "notifications.notifiers[0].name=Bad_Name")
    assert "name" in error


def test_hook_header_secrets_are_opt_in(helm_bin: Path) -> None:
    objs = render(helm_bin, sets=("rbac.hookHeaderSecrets=true",))
    role = one(objs, "ClusterRole")
    assert grants(role["rules"]) == NAMESPACED_GRANTS | CLUSTER_READS | {("", "secrets"): {"get"}}


def test_namespace_scope(helm_bin: Path) -> None:
    objs = render(helm_bin, CHART / "ci" / "namespaced-values.yaml")
    watched = {"ml-team-a", "ml-team-b"}
    roles = of_kind(objs, "Role")
    bindings = of_kind(objs, "RoleBinding")
    assert {r["metadata"]["namespace"] for r in roles} == watched
    assert {b["metadata"]["namespace"] for b in bindings} == watched
    for role in roles:
        assert grants(role["rules"]) == NAMESPACED_GRANTS
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "mr-modelrollout", "namespace": NAMESPACE}
        ]
    # Only read-only, cluster-scoped access is granted cluster-wide.
    cluster_role = one(objs, "ClusterRole")
    assert grants(cluster_role["rules"]) == CLUSTER_READS | {
        ("", "namespaces"): {"list", "watch"},
        ("", "pods"): {"list", "watch"},
    }
    assert one(objs, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    env = env_of(one(objs, "Deployment"))
    assert json.loads(env["MODELROLLOUT_NAMESPACES"]) == ["ml-team-a", "ml-team-b"]


def test_namespace_scope_defaults_to_the_release_namespace(helm_bin: Path) -> None:
    objs = render(helm_bin, sets=("rbac.scope=namespace",), namespace="ml")
    assert [r["metadata"]["namespace"] for r in of_kind(objs, "Role")] == ["ml"]
    assert env_of(one(objs, "Deployment"))["MODELROLLOUT_NAMESPACES"] == '["ml"]'


def test_namespace_scope_without_cluster_reads(helm_bin: Path) -> None:
    objs = render(
        helm_bin,
        CHART / "ci" / "namespaced-values.yaml",
        sets=("rbac.clusterReadAccess=false", "rbac.gpuCapacityCheck=false"),
    )
    assert not of_kind(objs, "ClusterRole")
    assert not of_kind(objs, "ClusterRoleBinding")
    assert len(of_kind(objs, "Role")) == 2


def test_rbac_create_false(helm_bin: Path) -> None:
    objs = render(helm_bin, sets=("rbac.create=false",))
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not of_kind(objs, kind)


# --- the CRD -----------------------------------------------------------------------------------


def _after_spec(text: str) -> str:
    match = re.search(r"^spec:\n", text, re.MULTILINE)
    assert match, "no top-level spec:"
    return text[match.start() :]


def test_chart_crd_file_is_the_generated_crd() -> None:
    chart_copy = CHART / "files" / "crd.yaml"
    assert chart_copy.read_bytes() == CRD_FILE.read_bytes(), (
        "charts/modelrollout/files/crd.yaml drifted from crds/: run `make chart-crds`"
    )


def test_rendered_crd_is_the_generated_crd(helm_bin: Path) -> None:
    result = run_helm(
        helm_bin,
        *("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION),
        *("--show-only", "templates/crd.yaml"),
    )
    assert result.returncode == 0, result.stderr
    source = CRD_FILE.read_text()
    # Byte for byte from `spec:` to the end: only metadata is the chart's.
    assert _after_spec(result.stdout).rstrip("\n") == _after_spec(source).rstrip("\n")

    rendered = yaml.safe_load(result.stdout)
    generated = yaml.safe_load(source)
    assert rendered["metadata"]["labels"].items() >= generated["metadata"]["labels"].items()
    for obj in (rendered, generated):
        obj["metadata"].pop("labels")
        obj["metadata"].pop("annotations", None)
    assert rendered == generated


def test_crd_switches(helm_bin: Path, default: list[Obj]) -> None:
    crd = one(default, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "modeldeployments.modelrollout.io"
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}

    unkept = one(render(helm_bin, sets=("crds.keep=false",)), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})

    assert not of_kind(render(helm_bin, sets=("crds.install=false",)), "CustomResourceDefinition")

    annotated = one(
        render(
            helm_bin, strings=("crds.annotations.argocd\\.argoproj\\.io/sync-options=Prune=false",)
        ),
        "CustomResourceDefinition",
    )
    assert annotated["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Prune=false",
    }


# --- sharding ----------------------------------------------------------------------------------


def test_a_shard_release_tells_the_operator_its_shard(helm_bin: Path) -> None:
    dep = one(render(helm_bin, sets=("sharding.count=3", "sharding.index=2")), "Deployment")
    env = env_of(dep)
    assert env["MODELROLLOUT_SHARD_COUNT"] == "3"
    assert env["MODELROLLOUT_SHARD_INDEX"] == "2"
    assert "sharding.index must be below sharding.count" in render_error(
        helm_bin, "sharding.count=3", "sharding.index=3"
    )


# --- peering -----------------------------------------------------------------------------------


def test_more_replicas_need_peering(helm_bin: Path) -> None:
    error = render_error(helm_bin, "replicaCount=2")
    assert "replicaCount > 1 needs peering.enabled=true" in error


def test_cluster_wide_peering(helm_bin: Path) -> None:
    objs = render(helm_bin, CHART / "ci" / "ha-values.yaml")
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(dep)
    assert env["MODELROLLOUT_PEERING"] == "modelrollout-ha"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    crds = {c["metadata"]["name"]: c for c in of_kind(objs, "CustomResourceDefinition")}
    assert set(crds) == {
        "modeldeployments.modelrollout.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert crds[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    peering = one(objs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "modelrollout-ha"
    # A hook: its CRD is part of the same release, so it cannot be a regular object.
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert not of_kind(objs, "KopfPeering")
    assert grants(one(objs, "ClusterRole")["rules"])[("kopf.dev", "clusterkopfpeerings")] == {
        "get",
        "list",
        "watch",
        "patch",
    }


def test_namespaced_peering(helm_bin: Path) -> None:
    objs = render(
        helm_bin,
        CHART / "ci" / "namespaced-values.yaml",
        sets=("peering.enabled=true", "peering.crds.install=false", "replicaCount=2"),
    )
    peerings = of_kind(objs, "KopfPeering")
    assert {p["metadata"]["namespace"] for p in peerings} == {"ml-team-a", "ml-team-b"}
    assert {p["metadata"]["name"] for p in peerings} == {"modelrollout"}
    assert not of_kind(objs, "ClusterKopfPeering")
    assert [c["metadata"]["name"] for c in of_kind(objs, "CustomResourceDefinition")] == [
        "modeldeployments.modelrollout.io"
    ]
    for role in of_kind(objs, "Role"):
        assert ("kopf.dev", "kopfpeerings") in grants(role["rules"])
    assert ("kopf.dev", "clusterkopfpeerings") not in grants(one(objs, "ClusterRole")["rules"])


# --- monitoring --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring(helm_bin: Path) -> list[Obj]:
    return render(helm_bin, CHART / "ci" / "monitoring-values.yaml")


@pytest.fixture(scope="session")
def promtool() -> Path:
    found = shutil.which("promtool")
    if not found:
        pytest.fail(f"promtool is not installed: {INSTALL_HINT}")
    return Path(found)


def check_rules(promtool: Path, tmp_path: Path, groups: list[Obj]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_monitor_scrapes_the_metrics_service(monitoring: list[Obj]) -> None:
    monitor = one(monitoring, "ServiceMonitor")
    svc = one(monitoring, "Service")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    # The operator's own `namespace` label (the ModelDeployment's) must survive the scrape.
    assert endpoint["honorLabels"] is True
    assert endpoint["interval"] == "15s"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"


def test_service_monitor_needs_the_service(helm_bin: Path) -> None:
    error = render_error(
        helm_bin, "metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"
    )
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in error


def test_prometheus_rule_passes_promtool(
    monitoring: list[Obj], promtool: Path, tmp_path: Path
) -> None:
    rule = one(monitoring, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    names = [r.get("alert") or r.get("record") for r in group["rules"]]
    assert names == [
        "ModelDeploymentRolledBack",
        "ModelRolloutReconcileErrors",
        "ModelInputDrift",
        "ModelRolloutOperatorDown",
        "ModelDeploymentDegraded",
        "modelrollout:reconcile_errors:rate5m",
    ]
    by_name = {r.get("alert"): r for r in group["rules"]}
    assert 'phase="RolledBack"' in by_name["ModelDeploymentRolledBack"]["expr"]
    assert "modelrollout_reconcile_errors_total" in by_name["ModelRolloutReconcileErrors"]["expr"]
    assert by_name["ModelRolloutReconcileErrors"]["expr"].endswith("> 0.1")
    assert by_name["ModelRolloutReconcileErrors"]["labels"]["severity"] == "critical"
    assert "modelrollout_input_drifted" in by_name["ModelInputDrift"]["expr"]
    check_rules(promtool, tmp_path, rule["spec"]["groups"])


def test_alerts_switch_off_one_by_one(helm_bin: Path) -> None:
    objs = render(
        helm_bin,
        sets=(
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.alerts.operatorDown.enabled=false",
        ),
    )
    rules = one(objs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        "ModelDeploymentRolledBack",
        "ModelRolloutReconcileErrors",
        "ModelInputDrift",
    ]


DASHBOARD_METRICS = (
    "modelrollout_reconcile_duration_seconds",
    "modelrollout_reconcile_errors_total",
    "modelrollout_managed_modeldeployments",
    "modelrollout_modeldeployment_phase",
    "modelrollout_analysis_total",
    "modelrollout_workqueue_depth",
    "modelrollout_workqueue_oldest_seconds",
    "modelrollout_workqueue_work_duration_seconds",
    "modelrollout_workqueue_retries_total",
    "modelrollout_input_drift",
    "modelserver_requests_total",
    "modelserver_request_duration_seconds",
    "modelserver_grpc_requests_total",
    "modelserver_grpc_request_duration_seconds",
)


def _panels(dashboard: Obj) -> Iterator[Obj]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboard(monitoring: list[Obj], promtool: Path, tmp_path: Path) -> None:
    config_map = one(monitoring, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML platform"}
    dashboard = json.loads(config_map["data"]["modelrollout.json"])
    assert dashboard["uid"] == "modelrollout"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "model"}

    exprs: list[str] = []
    ids: list[int] = []
    for panel in _panels(dashboard):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["title"]
        assert panel["description"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        exprs += [t["expr"] for t in panel["targets"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for metric in DASHBOARD_METRICS:
        assert any(metric in e for e in exprs), f"no panel shows {metric}"
    # Revision-level panels split by revision, which is what a canary is compared by.
    assert any("modelserver_requests_total" in e and "revision" in e for e in exprs)
    assert any("modelserver_request_duration_seconds" in e and "revision" in e for e in exprs)

    # Grafana variables substituted as Grafana would, then every query parsed by promtool.
    def concrete(expr: str) -> str:
        return (
            expr.replace("$__rate_interval", "5m")
            .replace('"$namespace"', '".*"')
            .replace('"$model"', '".*"')
        )

    records = [{"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
    check_rules(promtool, tmp_path, [{"name": "dashboard", "rules": records}])


# --- the values schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicaCont=2", "'replicaCont'"),
        ("operator.logFormt=json", "'logFormt'"),
        ("metrics.serviceMonitor.enabeld=true", "'enabeld'"),
        ("crds.keeep=false", "'keeep'"),
        ("securityContext.readOnlyRootFileSystem=false", "'readOnlyRootFileSystem'"),
    ],
)
def test_typo_fails_naming_the_key(helm_bin: Path, setting: str, named: str) -> None:
    error = render_error(helm_bin, setting)
    assert "don't meet the specifications of the schema" in error
    assert "additional properties" in error
    assert named in error


@pytest.mark.parametrize(
    ("setting", "at"),
    [
        ("rbac.scope=cluster-wide", "/rbac/scope"),
        ("operator.logFormat=text", "/operator/logFormat"),
        ("operator.metricsPort=70000", "/operator/metricsPort"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ],
)
def test_bad_value_fails_naming_the_path(helm_bin: Path, setting: str, at: str) -> None:
    error = render_error(helm_bin, setting)
    assert "don't meet the specifications of the schema" in error
    assert f"at '{at}'" in error


def _open_objects(node: Any, path: str = "") -> Iterator[str]:
    """Paths of object schemas that accept keys nobody declared."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "additionalProperties" not in node:
            yield path or "/"
        if node.get("additionalProperties") is True:
            yield path or "/"
        for key, sub in node.items():
            yield from _open_objects(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _open_objects(sub, f"{path}/{i}")


def test_schema_is_closed_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    # `global` is Helm's: a parent chart fills it for every subchart, with its own keys.
    assert list(_open_objects(schema)) == ["/properties/global"]


def test_schema_and_values_name_the_same_keys() -> None:
    """Every default has a schema entry and every top-level schema entry has a default."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node: Obj) -> Obj:
        ref = node.get("$ref")
        if isinstance(ref, str):
            resolved: Obj = schema["definitions"][ref.rsplit("/", 1)[1]]
            return resolved
        return node

    def walk(value: Any, node: Obj, path: str) -> None:
        node = resolve(node)
        if not isinstance(value, dict) or "properties" not in node:
            return
        props = node["properties"]
        assert set(value) <= set(props), f"{path}: {set(value) - set(props)} not in the schema"
        for key, sub in value.items():
            walk(sub, props[key], f"{path}.{key}")

    walk(values, schema, "")
    assert set(schema["properties"]) == set(values)


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a `# --` comment above it, or sits inside a documented key
    whose whole value is one setting (a security context, resources)."""
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    comment = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = True
            continue
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):(.*)$", line)
        if not match:  # list items of a default
            comment = False
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = any(doc for _, _, doc in stack)
        is_leaf = rest != ""
        if not (comment or inherited or not is_leaf):
            undocumented.append(".".join([k for _, k, _ in stack] + [key]))
        stack.append((indent, key, comment))
        comment = False
    assert undocumented == []
    # A parent without its own comment needs documented children; the loop above checks those.


def test_installs_as_a_subchart(helm_bin: Path, tmp_path: Path) -> None:
    """Umbrella charts pass `global` to every dependency; typos inside ours still fail."""
    parent = tmp_path / "platform"
    parent.mkdir()
    chart = {
        "apiVersion": "v2",
        "name": "platform",
        "version": "1.0.0",
        "dependencies": [
            {"name": "modelrollout", "version": "0.1.0", "repository": f"file://{CHART}"}
        ],
    }
    (parent / "Chart.yaml").write_text(yaml.safe_dump(chart))
    values: Obj = {
        "global": {"imageRegistry": "mirror.example.com"},
        "modelrollout": {"operator": {"logFormat": "plain"}},
    }
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    updated = run_helm(helm_bin, "dependency", "update", str(parent))
    assert updated.returncode == 0, updated.stderr

    args = ("template", "platform", str(parent), "--kube-version", KUBE_VERSION)
    result = run_helm(helm_bin, *args)
    assert result.returncode == 0, result.stderr
    objs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert env_of(one(objs, "Deployment"))["MODELROLLOUT_LOG_FORMAT"] == "plain"

    typo = run_helm(helm_bin, *args, "--set", "modelrollout.operator.logFormt=plain")
    assert typo.returncode != 0
    assert "'logFormt'" in typo.stderr


# --- kind --------------------------------------------------------------------------------------


def test_kind_values_match_the_kind_cluster(helm_bin: Path) -> None:
    config = yaml.safe_load((REPO / "hack" / "kind" / "config.yaml").read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    gpu = [n for n in workers if n.get("labels", {}).get("nvidia.com/gpu.present") == "true"]
    cpu = [n for n in workers if n not in gpu]
    assert len(gpu) == 1
    assert len(cpu) >= 1
    (patch,) = gpu[0]["kubeadmConfigPatches"]
    taints = yaml.safe_load(patch)["nodeRegistration"]["taints"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in taints

    dep = one(render(helm_bin, KIND_VALUES), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    # The operator lands on the CPU worker, and images come from `kind load`, never a registry.
    assert pod["nodeSelector"].items() <= cpu[0]["labels"].items()
    assert pod["containers"][0]["imagePullPolicy"] == "Never"
