"""The real node's addresses, paths and the configuration files of its parts: containerd, the
CNI bridge, kubeconfigs and metrics-server's registration. Pure: hack/realnode.py writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NODE = "real-0"
LABEL = ("modelrollout.io/node", "real")
BRIDGE = "mrnode0"
POD_CIDR = "10.89.0.0/24"
NODE_IP = "10.89.0.1"
SERVICE_CIDR = "10.96.0.0/16"  # the API server's --service-cluster-ip-range
CLUSTER_DOMAIN = "cluster.local"
# Addresses kwok writes into node and pod status; nothing answers there.
KWOK_CIDRS = ("10.243.0.0/16", "10.244.0.0/16")
STATE = Path("/var/lib/modelrollout-node")  # kubelet root, CNI config and IPAM state
RUN = Path("/run/modelrollout-node")  # containerd state and socket
CNI_BIN = Path("/usr/lib/cni")


def containerd_address() -> str:
    return str(RUN / "containerd.sock")


def metrics_api(port: int) -> dict[str, Any]:
    """metrics-server runs on the host: its Service has no selector, only the node address."""
    meta = {"name": "metrics-server", "namespace": "kube-system"}
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [
                {"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": port}]}
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": True,  # its serving certificate is self-signed
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def write_kubeconfig(path: Path, server: str, ca: Path, client: tuple[Path, Path]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {
                "name": "node",
                "user": {"client-certificate": str(client[0]), "client-key": str(client[1])},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "node"}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def cni_config() -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "modelrollout",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing leaves this machine as if from it
                "hairpinMode": True,  # a pod reaches itself through its Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(STATE / "cni" / "ipam"),
                },
            }
        ],
    }


def containerd_config(root: Path, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{RUN / "containerd"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{containerd_address()}"

[ttrpc]
  address = "{RUN / "containerd.ttrpc.sock"}"

[{cri}]
  sandbox_image = "{pause_image}"
  # Processes here lack CAP_SYS_RESOURCE: runc's write of oom_score_adj is refused without it.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{STATE / "cni" / "net.d"}"
"""


def kubelet_config(
    serving: tuple[Path, Path], client_ca: Path, healthz_port: int
) -> dict[str, Any]:
    crt, key = serving
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",  # cgroup v1 here, and PID 1 is not systemd
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_address()}",
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(crt),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",  # pods learn no resolver of this machine
        # Nothing can be pulled again, so never collect images; evict only when truly low.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%"},
        "registerWithTaints": [{"key": LABEL[0], "value": LABEL[1], "effect": "NoSchedule"}],
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
    }


def corefile_text(kubeconfig: Path) -> str:
    # No `forward`: names outside the cluster do not resolve, so pods reach nothing outside.
    return f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} local
        pods insecure
    }}
}}
"""
