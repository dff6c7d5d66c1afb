"""Certificates for the local control plane: a CA, the API server's serving certificate, an admin
client certificate (group system:masters) and the service-account signing key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClusterCerts:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate(directory: Path) -> ClusterCerts:
    """Write a fresh set of certificates into `directory` (reused when already complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = ClusterCerts(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    if all(Path(p).exists() for p in vars(certs).values()):
        return certs

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("modelrollout-local-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _issue(
        _name("kube-apiserver"),
        serving_key,
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ],
    )

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        _name("admin", "system:masters"),
        admin_key,
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )

    # Service-account tokens are signed with RS256 by default, so this one is RSA.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    for path, cert in (
        (certs.ca_cert, ca),
        (certs.serving_cert, serving),
        (certs.admin_cert, admin),
    ):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(certs.ca_key, ca_key)
    _write_key(certs.serving_key, serving_key)
    _write_key(certs.admin_key, admin_key)
    _write_key(certs.sa_key, sa_key)
    certs.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return certs


@dataclass(frozen=True)
class NodeCerts:
    kubelet_client: tuple[Path, Path]  # kubelet -> API server, as system:node:NAME
    kubelet_serving: tuple[Path, Path]  # the kubelet's HTTPS endpoint, for the node IP
    apiserver_kubelet_client: tuple[Path, Path]  # API server -> kubelet (logs, exec, metrics)
    kube_proxy_client: tuple[Path, Path]  # kube-proxy -> API server, as system:kube-proxy
    front_proxy_client: tuple[Path, Path]  # API server -> aggregated APIs (metrics-server)


def generate_node(cluster: ClusterCerts, directory: Path, node: str, node_ip: str) -> NodeCerts:
    """Certificates for a real node, issued by the cluster's CA: the identities a kubeadm node
    has, so the Node authorizer, RBAC's system:node-proxier binding and the kubelet's webhook
    authorization apply as on any cluster."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(cluster.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(cluster.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)

    def issue(stem: str, subject: x509.Name, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        sans = [x509.IPAddress(ipaddress.ip_address(node_ip)), x509.DNSName(node)]
        cert = _issue(
            subject, key, ca_cert.subject, ca_key, usages=[usage], sans=sans if server else None
        )
        crt, pem = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pem, key)
        return crt, pem

    return NodeCerts(
        kubelet_client=issue("kubelet-client", _name(f"system:node:{node}", "system:nodes")),
        kubelet_serving=issue("kubelet-serving", _name(node), server=True),
        apiserver_kubelet_client=issue(
            "apiserver-kubelet-client", _name("kube-apiserver-kubelet-client", "system:masters")
        ),
        kube_proxy_client=issue("kube-proxy-client", _name("system:kube-proxy")),
        front_proxy_client=issue("front-proxy-client", _name("front-proxy-client")),
    )
