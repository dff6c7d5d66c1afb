"""spec.model.reference: the reference profile of a model (docs/reference-profile.md)."""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, model_validator

from modelrollout.api.types import SHA256_PATTERN, ApiModel

__all__ = ["ReferenceSpec"]

_SCHEMES = {"file", "http", "https", "s3"}
_USERINFO = re.compile(r"^[A-Za-z0-9+.-]+://[^/?#]*@")


class ReferenceSpec(ApiModel):
    """Where the model's reference profile lives: the bins its model servers count outputs and
    input features in, and the reference frequencies input drift is measured against."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.uri.matches('^(file|https?|s3)://.+') "
                    "|| self.uri.startsWith('/')",
                    "message": "spec.model.reference.uri must be an absolute path or a file://, "
                    "http(s):// or s3:// URI",
                    "fieldPath": ".uri",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!self.uri.matches('^[A-Za-z0-9+.-]+://[^/?#]*@')",
                    "message": "spec.model.reference.uri must not carry credentials "
                    "(user:password@); reference a Secret with spec.model.credentialsSecret",
                    "fieldPath": ".uri",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    uri: str = Field(min_length=1, max_length=2048)
    """Where the profile (a JSON file of at most 1 MiB) lives: the same schemes and credentials
    as the model's."""

    sha256: str = Field(pattern=SHA256_PATTERN)
    """Lower-case hex SHA-256 of the profile: the model servers refuse another file."""

    @model_validator(mode="after")
    def _uri(self) -> ReferenceSpec:
        if not (self.uri.startswith("/") or self.uri.split("://", 1)[0] in _SCHEMES):
            raise ValueError(
                "spec.model.reference.uri must be an absolute path or a file://, http(s):// "
                "or s3:// URI"
            )
        if _USERINFO.match(self.uri):
            raise ValueError(
                "spec.model.reference.uri must not carry credentials (user:password@); "
                "reference a Secret with spec.model.credentialsSecret"
            )
        return self
