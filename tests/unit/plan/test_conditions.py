"""lastTransitionTime moves only when a condition's status flips."""

from modelrollout.api.status import Condition
from modelrollout.plan.conditions import ConditionUpdate, merge_conditions


def test_transition_time_kept_while_status_holds() -> None:
    first = merge_conditions(
        [], [ConditionUpdate("Ready", "False", "Deploying")], now="t1", generation=1
    )
    second = merge_conditions(
        first, [ConditionUpdate("Ready", "False", "Waiting", "m")], now="t2", generation=2
    )
    assert second[0].last_transition_time == "t1"
    assert (second[0].reason, second[0].message, second[0].observed_generation) == (
        "Waiting",
        "m",
        2,
    )
    third = merge_conditions(
        second, [ConditionUpdate("Ready", "True", "Available")], now="t3", generation=2
    )
    assert third[0].last_transition_time == "t3"


def test_unmentioned_conditions_and_order_are_kept() -> None:
    previous = [
        Condition(type="Ready", status="True", reason="A", last_transition_time="t0"),
        Condition(type="Custom", status="False", reason="B", last_transition_time="t0"),
    ]
    merged = merge_conditions(
        previous,
        [ConditionUpdate("Degraded", "False", "Healthy"), ConditionUpdate("Ready", "True", "A")],
        now="t1",
        generation=1,
    )
    assert [c.type for c in merged] == ["Ready", "Custom", "Degraded"]
    assert merged[1] == previous[1]
