"""The checked-in CRD is exactly what the pydantic models generate."""

from pathlib import Path

import yaml

from modelrollout.api import crdgen

CRD_FILE = Path(__file__).resolve().parents[3] / "crds" / "modeldeployments.modelrollout.io.yaml"


def test_checked_in_crd_matches_models() -> None:
    assert CRD_FILE.read_text() == crdgen.render(), "crds/ drifted from api/: run `make crds`"


def _walk(schema: dict[str, object], path: str = "spec") -> list[str]:
    """Paths of spec properties that lack a description (kubectl explain would show nothing)."""
    missing = []
    props = schema.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            assert isinstance(sub, dict)
            if not sub.get("description"):
                missing.append(f"{path}.{name}")
            missing += _walk(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        missing += _walk(items, f"{path}[]")
    return missing


def test_every_spec_field_is_described() -> None:
    crd = yaml.safe_load(crdgen.render())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _walk(spec) == []


def test_schema_is_structural() -> None:
    """No $ref, anyOf/oneOf or untyped nodes: the API server refuses non-structural schemas."""
    crd = yaml.safe_load(crdgen.render())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def check(node: dict[str, object], path: str) -> None:
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title"):
            assert banned not in node, f"{path} has {banned}"
        assert "type" in node, f"{path} has no type"
        for name, sub in (node.get("properties") or {}).items():  # type: ignore[attr-defined]
            check(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            check(node["items"], f"{path}[]")  # type: ignore[arg-type]
        if isinstance(node.get("additionalProperties"), dict):
            check(node["additionalProperties"], f"{path}{{}}")  # type: ignore[arg-type]

    check(root, "")


def test_printer_columns() -> None:
    crd = yaml.safe_load(crdgen.render())
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Model", "Hardware", "Canary", "Ready", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["mdep"]
