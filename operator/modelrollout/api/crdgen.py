"""Generate the ModelDeployment CustomResourceDefinition from the pydantic models.

`python -m modelrollout.api.crdgen` prints the CRD; `make crds` writes it to crds/. A unit test
fails when the checked-in file drifts from what this module renders.

Pydantic's JSON schema is turned into a Kubernetes *structural* schema: references are inlined,
optional fields lose their `null` branch, discriminated unions become one object whose `type`
is an enum (with a CEL rule per variant) and `x-kubernetes-validations` pass through.
"""

from __future__ import annotations

from typing import Any

import yaml

from modelrollout.api import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus

Schema = dict[str, Any]

_KEEP = {
    "type",
    "description",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "enum",
    "default",
    "x-kubernetes-validations",
}


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target = defs[ref.rsplit("/", 1)[-1]]
    # Keep siblings of $ref (pydantic puts the field's description and default beside it).
    merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _resolve(merged, defs)


def _merge_union(variants: list[Schema], discriminator: str) -> Schema:
    """One object holding every variant's fields; the discriminator is an enum and a CEL rule
    per variant refuses fields that belong to another variant."""
    properties: Schema = {}
    values: list[str] = []
    own: dict[str, set[str]] = {}
    for variant in variants:
        tag = variant["properties"][discriminator]
        value = tag.get("const", (tag.get("enum") or [None])[0])
        values.append(value)
        own[value] = set(variant["properties"]) - {discriminator}
        properties.update(variant["properties"])
        for name in variant.get("required", []):
            if name != discriminator:
                own[value].add(f"!{name}")
    properties[discriminator] = {
        "type": "string",
        "enum": values,
        "description": f"Which kind: {', '.join(values)}.",
    }
    rules = []
    all_fields = {f for fields in own.values() for f in fields if not f.startswith("!")}
    for value, fields in own.items():
        required = sorted(f[1:] for f in fields if f.startswith("!"))
        forbidden = sorted(all_fields - {f for f in fields if not f.startswith("!")})
        checks = [f"has(self.{f})" for f in required] + [f"!has(self.{f})" for f in forbidden]
        if checks:
            rules.append(
                {
                    "rule": f"self.{discriminator} != '{value}' || ({' && '.join(checks)})",
                    "message": f"{discriminator} {value} needs "
                    + (", ".join(required) or "no other fields")
                    + (f" and does not take {', '.join(forbidden)}" if forbidden else ""),
                }
            )
    merged: Schema = {
        "type": "object",
        "properties": properties,
        "required": [discriminator],
        "x-kubernetes-validations": rules,
    }
    return merged


def structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    schema = _resolve(schema, defs)
    description = schema.get("description")
    default = schema.get("default")

    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unsupported union in schema: {schema}")
        inner = {**_resolve(branches[0], defs)}
        if description:
            inner["description"] = description
        return structural(inner, defs)

    if "oneOf" in schema:
        variants = [_resolve(v, defs) for v in schema["oneOf"]]
        discriminator = schema["discriminator"]["propertyName"]
        merged = _merge_union(variants, discriminator)
        if description:
            merged["description"] = description
        return structural(merged, defs)

    out: Schema = {k: v for k, v in schema.items() if k in _KEEP}
    if description:
        # Docstrings wrap at the source's line length; kubectl explain re-wraps on its own.
        out["description"] = " ".join(description.split())
    if "const" in schema:
        out["enum"] = [schema["const"]]
        out.setdefault("type", "string")
    if default is None or isinstance(default, dict | list):
        # Object and list defaults would be stamped into every stored object; the operator
        # applies them instead.
        out.pop("default", None)
    if "exclusiveMinimum" in schema:
        out["minimum"] = schema["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "exclusiveMaximum" in schema:
        out["maximum"] = schema["exclusiveMaximum"]
        out["exclusiveMaximum"] = True

    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        out["type"] = "object"
        if "properties" in schema:
            out["properties"] = {
                name: structural(prop, defs) for name, prop in schema["properties"].items()
            }
            if schema.get("required"):
                out["required"] = list(schema["required"])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        elif extra is True or extra == {}:
            # dict[str, Any] or a model taking extra fields: a Kubernetes type passed through
            # as written (the API server validates it where it lands).
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(schema["items"], defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if not out.get("x-kubernetes-validations"):
        out.pop("x-kubernetes-validations", None)
    return out


def model_schema(model: type[ModelDeploymentSpec] | type[ModelDeploymentStatus]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def _status_schema() -> Schema:
    schema = model_schema(ModelDeploymentStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def crd() -> Schema:
    spec_schema = model_schema(ModelDeploymentSpec)
    # Hooks are keyed by name: the API server refuses two of one name.
    hooks = spec_schema["properties"]["rollout"]["properties"]["hooks"]
    hooks["x-kubernetes-list-type"] = "map"
    hooks["x-kubernetes-list-map-keys"] = ["name"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "modelrollout"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["modelrollout"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Model", "type": "string", "jsonPath": ".status.modelVersion"},
                        {"name": "Hardware", "type": "string", "jsonPath": ".status.hardware.tier"},
                        {"name": "Canary", "type": "integer", "jsonPath": ".status.canaryWeight"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served by an autoscaled, observable service "
                            "that moves to new versions step by step and rolls back on regression.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `make crds` from operator/modelrollout/api. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
