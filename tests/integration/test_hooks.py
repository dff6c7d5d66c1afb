"""Rollout hooks end to end: the operator calls a local HTTP receiver on 127.0.0.1 at each point
(pass, fail, time out), records the results in status, never repeats a passed hook (not even
after a restart), and runs a Job hook whose status the test sets (kwok runs no containers)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hack.receiver import Receiver
from modelrollout.api.hooks import HookPoint
from modelrollout.plan.hooks import job_name, run_key

from .conftest import Models
from .kube import Kube, OperatorProcess, model_deployment, revision, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def manifest(
    models: Models, name: str, version: str, hooks: list[dict[str, Any]]
) -> dict[str, Any]:
    return model_deployment(
        name,
        {
            "model": {"uri": models.small.uri, "sha256": models.small.sha256, "version": version},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            # No Prometheus here: the background analysis stays Inconclusive and never blocks.
            "rollout": {
                "steps": [{"setWeight": 50}],
                "bakeTime": "0s",
                "scaleDownDelay": "2s",
                "hooks": hooks,
            },
        },
    )


def http(name: str, at: str, url: str, method: str = "POST", **more: Any) -> dict[str, Any]:
    return {"name": name, "at": at, "http": {"url": url, "method": method}} | more


def status(kube: Kube, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.must("mdep", name).get("status") or {}
    return found


def until(
    kube: Kube, name: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The object's status once `check` holds for it."""

    def met() -> dict[str, Any] | None:
        s = status(kube, name)
        return s if check(s) else None

    return wait_for(met, timeout=90, what=f"{name}: {what}")


def serving(kube: Kube, name: str, m: dict[str, Any]) -> dict[str, Any]:
    want = revision(m)
    return until(kube, name, lambda s: s.get("stableRevision") == want, f"serving {want}")


def hooks_of(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["hook"]: h for h in s.get("hooks") or []}


def test_passing_hooks_run_once_per_revision_even_across_a_restart(
    kube: Kube, operator: OperatorProcess, models: Models, rx: Receiver
) -> None:
    base = f"/status/200/{kube.namespace}"
    v1 = manifest(models, "pass", "v1", [])
    kube.apply(v1)
    serving(kube, "pass", v1)
    hooks = [
        http("smoke", "preRollout", rx.url(f"{base}/smoke")),
        http("accept", "prePromotion", rx.url(f"{base}/accept"), method="PUT"),
        http("announce", "postPromotion", rx.url(f"{base}/announce")),
    ]
    v2 = manifest(models, "pass", "v2", hooks)
    assert kube.apply(v2).returncode == 0
    serving(kube, "pass", v2)

    def all_passed(s: dict[str, Any]) -> bool:
        return [h["phase"] for h in hooks_of(s).values()] == ["Passed"] * 3

    done = until(kube, "pass", all_passed, "three hooks passed")
    runs = {h: rx.requests_to(f"{base}/{h}") for h in ("smoke", "accept", "announce")}
    assert {h: len(r) for h, r in runs.items()} == {"smoke": 1, "accept": 1, "announce": 1}
    assert runs["accept"][0].method == "PUT"
    body = runs["smoke"][0].body
    assert body["revision"] == revision(v2)
    assert body["at"] == "preRollout"
    assert body["canaryUrl"] == f"http://pass-canary.{kube.namespace}.svc:8080"
    assert hooks_of(done)["accept"]["message"] == "HTTP 200"

    operator.kill()
    operator.start()
    time.sleep(8)  # a resync or two of the new operator
    assert status(kube, "pass")["stableRevision"] == revision(v2)
    again = {h: len(rx.requests_to(f"{base}/{h}")) for h in ("smoke", "accept", "announce")}
    assert again == {"smoke": 1, "accept": 1, "announce": 1}


def test_failing_and_slow_hooks(
    kube: Kube, operator: OperatorProcess, models: Models, rx: Receiver
) -> None:
    ns = kube.namespace
    v1f, v1s = manifest(models, "fails", "v1", []), manifest(models, "slow", "v1", [])
    kube.apply(v1f)
    kube.apply(v1s)
    serving(kube, "fails", v1f)
    serving(kube, "slow", v1s)
    failing = [
        http("smoke", "preRollout", rx.url(f"/status/500/{ns}/smoke")),
        http("page", "rollback", rx.url(f"/status/200/{ns}/page")),
    ]
    slow = [
        http("soak", "preRollout", rx.url(f"/slow/5/{ns}/soak"), timeout="1s", onFailure="hold")
    ]
    v2f, v2s = manifest(models, "fails", "v2", failing), manifest(models, "slow", "v2", slow)
    kube.apply(v2f)
    kube.apply(v2s)

    # A 500: rolled back with the answer's first line, and the rollback hook called once.
    rolled = until(kube, "fails", lambda s: s.get("phase") == "RolledBack", "rolled back")
    assert rolled["stableRevision"] == revision(v1f)
    reason = rolled["history"][0]["reason"]
    assert reason == "hook smoke (preRollout) failed: HTTP 500: 500 from the receiver"
    until(kube, "fails", lambda s: hooks_of(s).get("page", {}).get("phase") == "Passed",
          "rollback hook passed")  # fmt: skip
    assert len(rx.requests_to(f"/status/200/{ns}/page")) == 1
    assert hooks_of(status(kube, "fails"))["smoke"]["phase"] == "Failed"
    events = kube.run("-n", ns, "get", "events", "--field-selector", "reason=HookFailed")
    assert "hook smoke (preRollout)" in events

    # No answer within the timeout: held at 0% as configured, never given traffic.
    held = until(kube, "slow", lambda s: "held until retried" in s.get("message", ""), "held")
    assert "hook soak (preRollout) failed: no answer within 1s" in held["message"]
    assert held["canaryWeight"] == 0
    assert held["phase"] == "Progressing"
    assert held["stableRevision"] == revision(v1s)


def job_status(condition: str) -> dict[str, Any]:
    """What the job controller would write for a Job that ended so."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    first = "SuccessCriteriaMet" if condition == "Complete" else "FailureTarget"
    status: dict[str, Any] = {
        "active": 0,
        "ready": 0,
        "conditions": [
            {"type": first, "status": "True", "lastTransitionTime": now, "reason": "Test"},
            {"type": condition, "status": "True", "lastTransitionTime": now, "reason": "Test",
             "message": "the test says so"},
        ],
    }  # fmt: skip
    if condition == "Complete":
        status |= {"completionTime": now, "succeeded": 1}
    else:
        status |= {"failed": 1}
    return {"status": status}


def test_job_hooks_on_kwok(kube: Kube, operator: OperatorProcess, models: Models) -> None:
    """Job hooks whose pods cannot be scheduled (more CPU than any kwok node has), so nothing but
    the test decides how they end: one succeeds, one fails."""
    names = {}
    for md in ("jobs-ok", "jobs-bad"):
        kube.apply(manifest(models, md, "v1", []))
    for md in ("jobs-ok", "jobs-bad"):
        serving(kube, md, manifest(models, md, "v1", []))
    hook = {
        "name": "suite",
        "at": "preRollout",
        "timeout": "2m",
        "job": {"container": {"image": "acceptance:1", "args": ["--all"], "cpu": "900"}},
    }
    for md in ("jobs-ok", "jobs-bad"):
        v2 = manifest(models, md, "v2", [hook])
        kube.apply(v2)
        names[md] = job_name(md, run_key(revision(v2), HookPoint.PRE_ROLLOUT, -1, "suite"))
    job = wait_for(lambda: kube.get("job", names["jobs-ok"]), what="the Job")
    wait_for(lambda: kube.get("job", names["jobs-bad"]), what="the other Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["args"] == ["--all"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELROLLOUT_CANARY_URL"] == f"http://jobs-ok-canary.{kube.namespace}.svc:8080"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert job["spec"]["activeDeadlineSeconds"] == 120
    time.sleep(3)
    assert status(kube, "jobs-ok")["canaryWeight"] == 0, "no traffic before the hook passed"
    assert "waiting for preRollout hook suite" in status(kube, "jobs-ok")["message"]

    for md, condition in (("jobs-ok", "Complete"), ("jobs-bad", "Failed")):
        kube.run("-n", kube.namespace, "patch", "job", names[md], "--subresource=status",
                 "--type=merge", "-p", json.dumps(job_status(condition)))  # fmt: skip
    v2 = manifest(models, "jobs-ok", "v2", [hook])
    serving(kube, "jobs-ok", v2)
    record = hooks_of(status(kube, "jobs-ok"))["suite"]
    assert record["phase"] == "Passed"
    assert record["message"] == f"Job {names['jobs-ok']} succeeded"
    bad = until(kube, "jobs-bad", lambda s: s.get("phase") == "RolledBack", "rolled back")
    assert bad["history"][0]["reason"] == (
        f"hook suite (preRollout) failed: Job {names['jobs-bad']} failed (Test): the test says so"
    )


def test_notifications_arrive_once_per_transition_across_a_restart(
    kube: Kube, operator: OperatorProcess, models: Models, rx: Receiver
) -> None:
    ns = kube.namespace
    directory = operator.log_path.parent
    (directory / "webhook-url").write_text(rx.url(f"/status/200/{ns}/webhook"))
    (directory / "slack-url").write_text(rx.url(f"/status/200/{ns}/slack"))

    def arrived(path: str) -> list[dict[str, Any]]:
        return [r.body for r in rx.requests_to(f"/status/200/{ns}/{path}")]

    def events() -> list[str]:
        return [b["event"] for b in arrived("webhook")]

    notify = {"notify": ["test-webhook", "test-slack"]}
    v1 = manifest(models, "told", "v1", [])
    v1["spec"] |= notify
    kube.apply(v1)
    serving(kube, "told", v1)
    wait_for(lambda: events() == ["Promoted"], what="first revision promoted")

    v2 = manifest(models, "told", "v2", [])
    v2["spec"] |= notify
    v2["spec"]["rollout"]["steps"] = [
        {"setWeight": 20},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
    ]
    kube.apply(v2)
    wait_for(lambda: "RolloutStarted" in events(), what="rollout started")
    until(kube, "told", lambda s: "RolloutStarted" not in str(s.get("notifications")), "sent")
    operator.kill()
    operator.start()
    serving(kube, "told", v2)
    wait_for(lambda: events()[-1:] == ["Promoted"] and len(events()) > 2, what="v2 promoted")
    until(kube, "told", lambda s: not s.get("notifications"), "outbox empty")

    # A failing hook: rolled back, and told so once.
    v3 = manifest(models, "told", "v3", [http("smoke", "preRollout", rx.url(f"/status/500/{ns}"))])
    v3["spec"] |= notify
    kube.apply(v3)
    until(kube, "told", lambda s: s.get("phase") == "RolledBack", "v3 rolled back")
    wait_for(lambda: events()[-1:] == ["RolledBack"], what="rolled back notification")
    until(kube, "told", lambda s: not s.get("notifications"), "outbox empty again")
    time.sleep(3)
    sent = arrived("webhook")
    # Delivered at least once under one id per transition; a repeat (an operator stopped
    # between a delivery and the status write that records it) carries the same id.
    bodies = list({b["id"]: b for b in sent}.values())
    assert len(sent) - len(bodies) <= 1, sent
    assert [b["event"] for b in bodies] == [
        "Promoted",
        "RolloutStarted",
        "StepAdvanced",
        "Promoted",
        "RolloutStarted",
        "RolledBack",
    ], [(b["event"], b["revision"], b["message"]) for b in sent]
    assert bodies[2]["canaryWeight"] == 50
    assert bodies[3]["revision"] == revision(v2)
    assert bodies[5]["revision"] == revision(v3)
    assert "hook smoke (preRollout) failed" in bodies[5]["message"]
    slack = arrived("slack")
    assert len(bodies) <= len(slack) <= len(sent)
    assert slack[5]["text"].startswith(f":rewind: rolled back: *{ns}/told*")
