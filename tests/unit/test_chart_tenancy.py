"""The chart's multi-tenant parts, rendered by the real helm: the tenant policy reaches the
operator as it parses it, NetworkPolicies, the admission policy, and RBAC without cluster-wide
pod reads when the GPU capacity check is off."""

from __future__ import annotations

import json
from pathlib import Path

from modelrollout.hardware.thresholds import HardwareThresholds
from modelrollout.tenancy import TenantPolicy

from .test_chart import (
    CHART,
    NAMESPACE,
    _schema_for_chart,
    env_of,
    grants,
    helm_bin,
    of_kind,
    one,
    render,
    render_error,
)

TENANCY = CHART / "ci" / "tenancy-values.yaml"
__all__ = ["helm_bin"]  # the session fixture, shared with test_chart


def test_policy_schema_follows_the_operator() -> None:
    live = TenantPolicy.model_json_schema(by_alias=True, mode="validation")
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["definitions"]["tenantPolicy"] == _schema_for_chart(live), (
        "values.schema.json's tenantPolicy drifted from TenantPolicy; replace it with:\n"
        + json.dumps(_schema_for_chart(live), indent=2)
    )
    assert schema["properties"]["operator"]["properties"]["policy"] == {
        "$ref": "#/definitions/tenantPolicy"
    }


def test_policy_reaches_the_operator(helm_bin: Path) -> None:
    env = env_of(one(render(helm_bin, TENANCY), "Deployment"))
    policy = TenantPolicy.model_validate_json(env["MODELROLLOUT_POLICY"])
    assert policy.model_hosts == ["models.example.com", "*.blob.example.net"]
    assert [str(n) for n in policy.allowed_networks] == ["10.20.0.0/16"]
    assert policy.fetch_deadline_seconds == 300
    assert policy.model_uri_schemes == ["https", "http", "s3", "gs", "az"]  # no file:// here
    assert "MODELROLLOUT_POLICY" not in env_of(one(render(helm_bin), "Deployment"))
    assert "'modelHost'" in render_error(helm_bin, "operator.policy.modelHost=x")


def test_no_cluster_wide_pod_reads_without_the_capacity_check(helm_bin: Path) -> None:
    objs = render(helm_bin, TENANCY)
    (cluster_role,) = of_kind(objs, "ClusterRole")
    assert set(grants(cluster_role["rules"])) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    }
    env = env_of(one(objs, "Deployment"))
    assert (
        HardwareThresholds.model_validate_json(env["MODELROLLOUT_HARDWARE"]).capacity_check is False
    )
    # Cluster scope keeps its namespaced grants but reads no nodes.
    cluster = render(helm_bin, sets=("rbac.gpuCapacityCheck=false",))
    assert ("", "nodes") not in grants(one(cluster, "ClusterRole")["rules"])


def test_network_policies(helm_bin: Path) -> None:
    objs = render(helm_bin, TENANCY)
    policies = {
        (p["metadata"]["namespace"], p["metadata"]["name"]): p
        for p in of_kind(objs, "NetworkPolicy")
    }
    assert set(policies) == {
        (NAMESPACE, "mr-modelrollout"),
        ("ml-team-a", "mr-modelrollout-model-servers"),
        ("ml-team-b", "mr-modelrollout-model-servers"),
    }
    operator = policies[(NAMESPACE, "mr-modelrollout")]["spec"]
    deployment = one(objs, "Deployment")
    assert operator["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert operator["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for p in operator["ingress"][0]["ports"]] == [8000]
    egress = {
        tuple(p["port"] for p in rule["ports"]): rule.get("to") for rule in operator["egress"]
    }
    assert egress[(443,)] in (
        [{"ipBlock": {"cidr": "10.96.0.1/32"}}],
        [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    )
    assert egress[(9090,)][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert egress[(8443,)] == [{"ipBlock": {"cidr": "10.30.0.0/16"}}]
    servers = policies[("ml-team-a", "mr-modelrollout-model-servers")]["spec"]
    assert servers["podSelector"] == {
        "matchExpressions": [{"key": "modelrollout.io/deployment", "operator": "Exists"}]
    }
    model, metrics = servers["ingress"]
    assert model["ports"] == [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]
    assert model["from"][0] == {"podSelector": {"matchLabels": {"modelrollout.io/client": "true"}}}
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert not of_kind(render(helm_bin), "NetworkPolicy")


def test_admission_policy_matches_the_operator_only(helm_bin: Path) -> None:
    objs = render(helm_bin, TENANCY)
    policy = one(objs, "ValidatingAdmissionPolicy")
    binding = one(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (condition,) = policy["spec"]["matchConditions"]
    assert f"system:serviceaccount:{NAMESPACE}:mr-modelrollout" in condition["expression"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (["pods"], ["UPDATE"])
    assert not of_kind(render(helm_bin), "ValidatingAdmissionPolicy")


def test_prometheus_token_from_a_secret(helm_bin: Path) -> None:
    objs = render(helm_bin, sets=("operator.prometheusTokenSecret.name=prom-token",), strings=())
    deployment = one(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = env_of(deployment)["MODELROLLOUT_PROMETHEUS_TOKEN_FILE"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "prometheus-token")
    assert path == f"{mount['mountPath']}/token"
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "prometheus-token")
    assert volume["secret"] == {
        "secretName": "prom-token",
        "items": [{"key": "token", "path": "token"}],
    }
    # No Secret named: no token, no volume.
    plain = one(render(helm_bin), "Deployment")
    assert "MODELROLLOUT_PROMETHEUS_TOKEN_FILE" not in env_of(plain)


def test_secrets_are_read_only_when_the_policy_says_so(helm_bin: Path) -> None:
    def secret_rules(*sets: str) -> list[dict[str, object]]:
        docs = render(helm_bin, sets=sets)
        return [
            rule
            for role in of_kind(docs, "ClusterRole")
            for rule in role["rules"]
            if "secrets" in rule["resources"]
        ]

    assert secret_rules() == []
    on = secret_rules("operator.policy.readModelCredentials=true")
    assert on == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
