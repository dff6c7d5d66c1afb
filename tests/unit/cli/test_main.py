"""Argument handling, kubeconfig selection and error wording, without an API server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import Status, StatusDetails
from lightkube.types import OnErrorAction

from modelrollout.cli import commands as main
from modelrollout.cli import kube

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: "https://127.0.0.1:1"}
- name: two
  cluster: {server: "https://127.0.0.1:2"}
contexts:
- name: one
  context: {cluster: one, user: u, namespace: ml}
- name: two
  context: {cluster: two, user: u}
users:
- name: u
  user: {token: t}
current-context: one
"""


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "prod", "--context", "two", "status", "iris"],
        ["status", "iris", "-n", "prod", "--context", "two"],
        ["--context", "two", "status", "-n", "prod", "iris"],
    ],
)
def test_connection_flags_before_or_after_the_command(argv: list[str]) -> None:
    args = main.parser().parse_args(argv)
    assert (args.namespace, args.context, args.name) == ("prod", "two", "iris")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run(["frobnicate"]) == 2
    assert main.run(["status"]) == 2
    assert main.run(["undo", "iris", "--to-revision"]) == 2
    assert main.run(["--help"]) == 0
    assert "status" in capsys.readouterr().out


def test_first_existing_kubeconfig_and_its_context(kubeconfig: Path) -> None:
    config = kube.load_config(None, None)
    assert (config.context_name, config.namespace) == ("one", "ml")
    config = kube.load_config(None, "two")
    assert (config.cluster.server, config.namespace) == ("https://127.0.0.1:2", "default")


def test_explicit_kubeconfig_wins(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert kube.load_config(str(kubeconfig), None).context_name == "one"


def test_kubeconfig_problems_are_sentences(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(kube.CliError, match="Context 'nope' not found"):
        kube.load_config(None, "nope")
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/a:/nonexistent/b")
    with pytest.raises(kube.CliError, match="none of the files in KUBECONFIG exists"):
        kube.load_config(None, None)
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(kubeconfig.parent / "empty-home"))
    assert main.run(["list"]) == 1
    assert capsys.readouterr().err == (
        "error: no kubeconfig found: set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config\n"
    )


def test_unreachable_server(kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run(["list"], out=io.StringIO()) == 1
    assert capsys.readouterr().err.startswith(
        "error: cannot reach the API server at https://127.0.0.1:1"
    )


def error(code: int, message: str, name: str | None = None) -> ApiError:
    details = StatusDetails(name=name, kind="modeldeployments") if name else None
    return ApiError(status=Status(code=code, message=message, details=details))


def test_api_errors_are_classified() -> None:
    gone = kube.api_error(error(404, "not found", name="iris"), "ml", "iris")
    assert (str(gone), gone.code) == ("modeldeployment 'iris' not found in namespace ml", 3)
    no_crd = kube.api_error(
        error(404, "the server could not find the requested resource"), "ml", "iris"
    )
    assert no_crd.code == 3
    assert "install the CRD" in str(no_crd)
    denied = kube.api_error(
        error(403, 'modeldeployments.modelrollout.io "iris" is forbidden: User "x" cannot patch'),
        "ml",
        "iris",
    )
    assert denied.code == 4
    assert str(denied).startswith("forbidden: modeldeployments.modelrollout.io")
    assert kube.api_error(error(401, "Unauthorized"), "ml", "iris").code == 4
    conflict = kube.api_error(error(409, "the object has been modified"), "ml", "iris")
    assert conflict.code == 1
    assert "run it again" in str(conflict)
    invalid = kube.api_error(error(422, "spec.model.version: Invalid value"), "ml", "iris")
    assert str(invalid) == (
        "the API server refused the request (422): spec.model.version: Invalid value"
    )


def test_watch_retries_what_a_long_watch_meets() -> None:
    assert (
        kube._watch_error(error(410, "too old resource version"), 1).action is OnErrorAction.RETRY
    )
    assert kube._watch_error(error(500, "etcd leader changed"), 3).sleep == 1.5
    assert kube._watch_error(error(403, "forbidden"), 1).action is OnErrorAction.RAISE
    assert kube._watch_error(error(404, "gone"), 1).action is OnErrorAction.RAISE
