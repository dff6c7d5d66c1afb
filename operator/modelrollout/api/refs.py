"""References to Secrets and ConfigMaps in a ModelDeployment's namespace: how a spec gives the
model server credentials without writing them into the spec (the operator never reads them)."""

from __future__ import annotations

from pydantic import Field, model_validator

from modelrollout.api.types import ApiModel

# A Secret or ConfigMap name (a DNS subdomain).
SECRET_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class KeyRef(ApiModel):
    """One key of a Secret or ConfigMap in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_PATTERN)
    """Name of the Secret or ConfigMap."""

    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """The key."""

    optional: bool | None = None
    """Start the pod even when it is missing."""


class EnvVarSource(ApiModel):
    """Where a variable's value comes from: one key of a Secret or of a ConfigMap."""

    secret_key_ref: KeyRef | None = None
    """A key of a Secret."""

    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap."""

    @model_validator(mode="after")
    def _one(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("valueFrom needs exactly one of secretKeyRef and configMapKeyRef")
        return self


# --- serving ----------------------------------------------------------------------------------


class AuthSpec(ApiModel):
    """Bearer-token authentication of the model server's inference endpoints."""

    token_secret: KeyRef
    """The Secret key holding the token clients must send (`Authorization: Bearer ...`). It is
    mounted into the pod as a file, never put in an environment variable."""
