"""Credentials for the model stores, from the pod's environment: a Secret's keys (envFrom) or
the pod's workload identity, exchanged for a short-lived token.

- S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN); else IRSA and EKS pod
  identity's AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, exchanged at STS
  (AssumeRoleWithWebIdentity; AWS_ENDPOINT_URL_STS overrides the endpoint).
- GCS: GOOGLE_OAUTH_ACCESS_TOKEN; else GKE workload identity's metadata server
  (GCE_METADATA_HOST overrides its address); else anonymous.
- Azure: AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_ACCESS_TOKEN; else Azure workload
  identity's AZURE_FEDERATED_TOKEN_FILE + AZURE_CLIENT_ID + AZURE_TENANT_ID, exchanged at
  AZURE_AUTHORITY_HOST; else anonymous.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode

import httpx

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
METADATA_TIMEOUT_S = 2.0
_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ACCESS_TOKEN",
)


class IdentityError(Exception):
    """The workload identity could not be exchanged for a token; the message says why."""


def credentials(scheme: str, env: Mapping[str, str]) -> dict[str, str]:
    """The credentials for a store (s3, gs, az), as the keys stores.py reads."""
    found = {k: env[k] for k in _KEYS if env.get(k)}
    if "AWS_REGION" not in found and env.get("AWS_DEFAULT_REGION"):
        found["AWS_REGION"] = env["AWS_DEFAULT_REGION"]
    if scheme == "s3" and "AWS_ACCESS_KEY_ID" not in found:
        if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
            found |= _aws_web_identity(env)
    elif scheme == "gs" and "GOOGLE_OAUTH_ACCESS_TOKEN" not in found:
        token = _gke_metadata_token(env)
        if token:
            found["GOOGLE_OAUTH_ACCESS_TOKEN"] = token
    elif scheme == "az" and not _azure_token(found) and _azure_federation(env):
        found["AZURE_STORAGE_ACCESS_TOKEN"] = _azure_federated(env)
    return found


def _azure_token(found: Mapping[str, str]) -> bool:
    return bool(found.get("AZURE_STORAGE_SAS_TOKEN") or found.get("AZURE_STORAGE_ACCESS_TOKEN"))


def _azure_federation(env: Mapping[str, str]) -> bool:
    return bool(env.get("AZURE_FEDERATED_TOKEN_FILE") and env.get("AZURE_CLIENT_ID"))


def _read_token(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        raise IdentityError(f"cannot read the projected token {path}: {e.strerror}") from None


def _aws_web_identity(env: Mapping[str, str]) -> dict[str, str]:
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("AWS_ENDPOINT_URL_STS") or f"https://sts.{region}.amazonaws.com"
    query = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": env["AWS_ROLE_ARN"],
        "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME") or "modelserver",
        "WebIdentityToken": _read_token(env["AWS_WEB_IDENTITY_TOKEN_FILE"]),
    }
    try:
        response = httpx.post(endpoint.rstrip("/") + "/", data=query, timeout=TIMEOUT_S)
    except httpx.HTTPError as e:
        raise IdentityError(f"STS AssumeRoleWithWebIdentity failed: {type(e).__name__}") from None
    if response.status_code != 200:
        raise IdentityError(f"STS AssumeRoleWithWebIdentity answered HTTP {response.status_code}")
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError:
        raise IdentityError("STS answered something that is not XML") from None
    for el in root.iter():
        el.tag = el.tag.rsplit("}", 1)[-1]
    keys = {
        "AWS_ACCESS_KEY_ID": root.findtext(".//Credentials/AccessKeyId", ""),
        "AWS_SECRET_ACCESS_KEY": root.findtext(".//Credentials/SecretAccessKey", ""),
        "AWS_SESSION_TOKEN": root.findtext(".//Credentials/SessionToken", ""),
    }
    if not all(keys.values()):
        raise IdentityError("STS answered without credentials")
    return keys


def _gke_metadata_token(env: Mapping[str, str]) -> str:
    """The metadata server's token for the pod's service account; "" off GKE (anonymous)."""
    host = env.get("GCE_METADATA_HOST") or "metadata.google.internal"
    url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
    try:
        response = httpx.get(url, headers={"Metadata-Flavor": "Google"}, timeout=METADATA_TIMEOUT_S)
        if response.status_code == 200:
            return str(response.json()["access_token"])
    except (httpx.HTTPError, ValueError, KeyError) as e:
        log.info("no GCE metadata server token (%s): reading anonymously", type(e).__name__)
    return ""


def _azure_federated(env: Mapping[str, str]) -> str:
    authority = (env.get("AZURE_AUTHORITY_HOST") or "https://login.microsoftonline.com/").rstrip(
        "/"
    )
    url = f"{authority}/{env.get('AZURE_TENANT_ID', 'organizations')}/oauth2/v2.0/token"
    form = {
        "client_id": env["AZURE_CLIENT_ID"],
        "scope": "https://storage.azure.com/.default",
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": _read_token(env["AZURE_FEDERATED_TOKEN_FILE"]),
    }
    try:
        response = httpx.post(
            url,
            content=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=TIMEOUT_S,
        )
        if response.status_code == 200:
            return str(response.json()["access_token"])
    except (httpx.HTTPError, ValueError, KeyError) as e:
        raise IdentityError(f"Azure token exchange failed: {type(e).__name__}") from None
    raise IdentityError(f"Azure token exchange answered HTTP {response.status_code}")
