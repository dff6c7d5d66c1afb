"""docs/: the API reference is what the models generate, and the pages' links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from modelrollout.api import docgen
from modelrollout.api.spec import ModelDeploymentSpec
from modelrollout.api.status import ModelDeploymentStatus

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
API = DOCS / "api.md"
PAGES = [
    "README.md",
    "api.md",
    "gitops.md",
    "kubectl-plugin.md",
    "metrics.md",
    "operations.md",
    "pods.md",
    "reference-profile.md",
    "rollouts.md",
]

# Status fields whose models carry no attribute docstring yet (api.md shows "—"). When one gets
# documented, drop it here and regenerate docs/api.md; a new undocumented field fails the test.
UNDOCUMENTED_STATUS: dict[str, set[str]] = {}


def test_checked_in_api_reference_matches_models() -> None:
    assert API.read_text() == docgen.render(), (
        "docs/api.md drifted from api/: run `.venv/bin/python -m modelrollout.api.docgen > "
        "docs/api.md`"
    )


def _tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Section name -> field -> the row's cells."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("### "):
            section = line[4:]
            out[section] = {}
        elif line.startswith("| `") and section:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[section][cells[0].strip("`")] = cells
    return out


def _models(root: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()

    def visit(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.add(model)
        for info in model.model_fields.values():
            for child in docgen._models_in(info.annotation):
                visit(child)

    visit(root)
    return found


def test_every_field_has_a_row() -> None:
    tables = _tables(docgen.render())
    for model in _models(ModelDeploymentSpec) | _models(ModelDeploymentStatus):
        rows = tables[model.__name__]
        wire = {info.alias or name for name, info in model.model_fields.items()}
        assert set(rows) == wire, model.__name__


def test_every_spec_field_is_described() -> None:
    tables = _tables(docgen.render())
    missing = [
        f"{model.__name__}.{field}"
        for model in _models(ModelDeploymentSpec)
        for field, cells in tables[model.__name__].items()
        if cells[3] == "—"
    ]
    assert missing == []


def test_undocumented_status_fields_only_shrink() -> None:
    tables = _tables(docgen.render())
    spec_models = _models(ModelDeploymentSpec)
    undocumented = {
        model.__name__: {f for f, cells in tables[model.__name__].items() if cells[3] == "—"}
        for model in _models(ModelDeploymentStatus) - spec_models
    }
    undocumented = {k: v for k, v in undocumented.items() if v}
    assert undocumented == UNDOCUMENTED_STATUS


def test_types_and_defaults_are_rendered() -> None:
    tables = _tables(docgen.render())
    assert tables["AutoscalingSpec"]["minReplicas"][1:3] == ["integer, 1..1000", "`1`"]
    assert tables["AutoscalingSpec"]["targetRequestsPerSecond"][1] == "number, > 0, <= 1000000"
    assert tables["BatchingSpec"]["window"][1:3] == ["duration", '`"2ms"`']
    assert tables["Resources"]["limits"][1] == "map of string to quantity"
    assert tables["HardwareSpec"]["mode"][1] == '`"auto"` \\| `"cpu"` \\| `"gpu"`'
    assert tables["ModelSpec"]["uri"][2] == "required"
    assert tables["HistoryEntry"]["revision"][2] == "always set"
    assert tables["RolloutSpec"]["trafficRouter"][2] == '`{"type": "replicas"}`'
    assert tables["RolloutSpec"]["steps"][2].startswith('`[{"setWeight": 10}, {"analysis"')
    assert (
        "one of [GatewayAPIRouter](#gatewayapirouter)" in tables["RolloutSpec"]["trafficRouter"][1]
    )


_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page: str) -> None:
    path = DOCS / page
    # Code (fenced or inline) holds regexes and shell, not links.
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in _LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{page}: link to missing {target}"
        if anchor and linked.suffix == ".md":
            anchors = {
                re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            }
            assert anchor in anchors, f"{page}: no heading for #{anchor} in {linked.name}"
