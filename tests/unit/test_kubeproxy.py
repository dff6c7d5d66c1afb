"""Reading kube-proxy's iptables rules: which pods a Service's cluster IP is sent to."""

from __future__ import annotations

import shlex

from hack.kubeproxy import ready_ips, routed_in

# As `iptables -t nat -S` prints kube-proxy's rules (v1.34, iptables mode), trimmed.
NAT = [
    "-N KUBE-SEP-AAA",
    "-N KUBE-SEP-BBB",
    "-N KUBE-SERVICES",
    "-N KUBE-SVC-HTTP",
    "-N KUBE-SVC-METRICS",
    '-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "ns/iris:http'
    ' cluster IP" -m tcp --dport 8080 -j KUBE-SVC-HTTP',
    '-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "ns/iris:metrics'
    ' cluster IP" -m tcp --dport 9090 -j KUBE-SVC-METRICS',
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" -m'
    " addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    "-A KUBE-SVC-HTTP ! -s 10.89.0.0/24 -d 10.96.0.20/32 -p tcp -m tcp --dport 8080"
    " -j KUBE-MARK-MASQ",
    '-A KUBE-SVC-HTTP -m comment --comment "ns/iris:http -> 10.89.0.5:8080" -m'
    " statistic --mode random --probability 0.5 -j KUBE-SEP-AAA",
    '-A KUBE-SVC-HTTP -m comment --comment "ns/iris:http -> 10.89.0.6:8080" -j KUBE-SEP-BBB',
    "-A KUBE-SEP-AAA -s 10.89.0.5/32 -m comment --comment ns/iris:http -j KUBE-MARK-MASQ",
    "-A KUBE-SEP-AAA -p tcp -m comment --comment ns/iris:http -m tcp -j DNAT"
    " --to-destination 10.89.0.5:8080",
    "-A KUBE-SEP-BBB -p tcp -m comment --comment ns/iris:http -m tcp -j DNAT"
    " --to-destination 10.89.0.6:8080",
    "-A KUBE-SVC-METRICS -j KUBE-SEP-CCC",
    "-A KUBE-SEP-CCC -p tcp -m tcp -j DNAT --to-destination 10.89.0.7:9090",
]


def rules(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if line.startswith("-A ")]


def test_the_endpoints_of_one_service_port() -> None:
    assert routed_in(rules(NAT), "10.96.0.20", 8080) == {"10.89.0.5", "10.89.0.6"}
    assert routed_in(rules(NAT), "10.96.0.20", 9090) == {"10.89.0.7"}


def test_a_service_without_programmed_endpoints_routes_nowhere() -> None:
    # Before kube-proxy's sync the cluster IP has no KUBE-SVC chain (the filter table rejects).
    assert routed_in(rules(NAT), "10.96.0.21", 8080) == set()
    assert routed_in([], "10.96.0.20", 8080) == set()


def test_ready_ips_are_ready_pods_not_being_deleted() -> None:
    def pod(ip: str, ready: str, deleting: bool = False) -> dict[str, object]:
        meta = {"deletionTimestamp": "2026-11-30T08:00:00Z"} if deleting else {}
        conditions = [{"type": "Ready", "status": ready}]
        return {"metadata": meta, "status": {"podIP": ip, "conditions": conditions}}

    pods = [pod("10.89.0.5", "True"), pod("10.89.0.6", "False"), pod("10.89.0.7", "True", True)]
    assert ready_ips(pods) == {"10.89.0.5"}
