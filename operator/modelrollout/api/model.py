"""spec.model: which model to serve and the store it is read from."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from modelrollout.api.reference import ReferenceSpec
from modelrollout.api.refs import SECRET_PATTERN
from modelrollout.api.types import NAME_PATTERN, SHA256_PATTERN, ApiModel

_USERINFO = re.compile(r"^[A-Za-z0-9+.-]+://[^/?#]*@")
SCHEMES = ("file", "http", "https", "s3", "gs", "az", "pvc", "oci")
_SCHEME_TEXT = (
    "an absolute path or a file://, http(s)://, s3://, gs://, az://, pvc:// or oci:// URI"
)
PVC_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^?#\s]*$"
OCI_PATTERN = r"^oci://[^/?#@\s]+/[^?#\s]+$"
# An endpoint is a base URL: no credentials, query or fragment (they would ride on every request).
ENDPOINT_PATTERN = r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"


class ModelFormat(StrEnum):
    ONNX = "onnx"


class ModelSpec(ApiModel):
    """Which model to serve. A change to any of these fields starts a new revision."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.uri.matches('^(" + "|".join(SCHEMES) + ")://.+') "
                    "|| self.uri.startsWith('/')",
                    "message": f"spec.model.uri must be {_SCHEME_TEXT}",
                    "fieldPath": ".uri",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!self.uri.matches('^[A-Za-z0-9+.-]+://[^/?#]*@')",
                    "message": "spec.model.uri must not carry credentials (user:password@); "
                    "reference a Secret with spec.model.credentialsSecret",
                    "fieldPath": ".uri",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": f"!self.uri.startsWith('pvc://') || (self.uri.matches(r'{PVC_PATTERN}')"
                    " && !self.uri.matches('/[.][.](/|$)'))",
                    "message": "spec.model.uri: want pvc://CLAIM/PATH, a claim name and a path "
                    "without ..",
                    "fieldPath": ".uri",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": f"!self.uri.startsWith('oci://') || self.uri.matches(r'{OCI_PATTERN}')",
                    "message": "spec.model.uri: want oci://REGISTRY/REPOSITORY:TAG (or @DIGEST)",
                    "fieldPath": ".uri",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!has(self.endpoint) || self.uri.matches('^(s3|gs|az)://')",
                    "message": "spec.model.endpoint is for s3://, gs:// and az:// URIs only",
                    "fieldPath": ".endpoint",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    uri: str = Field(min_length=1, max_length=2048)
    """Where the ONNX file lives: an absolute path, file://, http(s)://, s3://BUCKET/KEY,
    gs://BUCKET/OBJECT, az://ACCOUNT/CONTAINER/BLOB, pvc://CLAIM/PATH (a PersistentVolumeClaim
    in the namespace, mounted read-only) or oci://REGISTRY/REPOSITORY:TAG (an image holding
    the model under /models). A URI ending in `/` names a directory: the one .onnx file in it
    is served, with its external data files beside it (see docs/model-stores.md)."""

    endpoint: str | None = Field(default=None, max_length=512, pattern=ENDPOINT_PATTERN)
    """Base URL of an S3-compatible store (MinIO, Ceph, R2...) or of a GCS or Azure Blob
    endpoint other than the cloud's own. The operator reaches it only where its platform policy
    allows the address (private networks are refused unless listed)."""

    region: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9-]+$")
    """S3 region the request is signed for; default the pod's AWS_REGION, else us-east-1."""

    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """Lower-case hex SHA-256 of the model file. The server refuses to load a file that does
    not match, so a wrong or tampered file never serves traffic."""

    version: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Version label of the model, reported in metrics and status (for example `v3` or
    `2024-06-01`)."""

    refresh: str | None = Field(default=None, max_length=63)
    """Without sha256, the operator pins the bytes it read when the revision started. A file
    changed later at the same URI is served only as a new revision: set or change this (any
    value, a date for example) or the version to start one."""

    format: ModelFormat = ModelFormat.ONNX
    """Model format. Only `onnx` is served today."""

    name: str | None = Field(default=None, max_length=63, pattern=NAME_PATTERN)
    """Name the model is served under at `/v2/models/{name}`. Defaults to the
    ModelDeployment's name."""

    credentials_secret: str | None = Field(default=None, max_length=253, pattern=SECRET_PATTERN)
    """A Secret in the same namespace whose keys become environment variables of the model
    server, for the model store (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    `GOOGLE_OAUTH_ACCESS_TOKEN`, `AZURE_STORAGE_SAS_TOKEN`...). Without it the pods use their
    workload identity, if any. Credentials never go in the URI."""

    reference: ReferenceSpec | None = None
    """The model's reference profile (docs/reference-profile.md): bins for the counters of
    its outputs and input features. Without one, outputs are counted in default bins."""

    @model_validator(mode="after")
    def _uri_scheme(self) -> ModelSpec:
        if not (self.uri.startswith("/") or self.uri.split("://", 1)[0] in SCHEMES):
            raise ValueError(f"spec.model.uri must be {_SCHEME_TEXT}")
        if _USERINFO.match(self.uri):
            raise ValueError(
                "spec.model.uri must not carry credentials (user:password@); reference a Secret "
                "with spec.model.credentialsSecret"
            )
        if self.uri.startswith("pvc://") and (
            not re.match(PVC_PATTERN, self.uri) or re.search(r"/\.\.(/|$)", self.uri)
        ):
            raise ValueError(
                "spec.model.uri: want pvc://CLAIM/PATH, a claim name and a path without .."
            )
        if self.uri.startswith("oci://") and not re.match(OCI_PATTERN, self.uri):
            raise ValueError("spec.model.uri: want oci://REGISTRY/REPOSITORY:TAG (or @DIGEST)")
        if self.endpoint and self.uri.split("://", 1)[0] not in ("s3", "gs", "az"):
            raise ValueError("spec.model.endpoint is for s3://, gs:// and az:// URIs only")
        return self
