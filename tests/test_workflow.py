"""The CI workflow's logic where a test can reach it: conditions that can be true, and secrets only where GitHub
lets a step read them. A step's ``if`` sees the workflow's and the job's ``env`` but neither the secrets context nor
the step's own ``env`` (GitHub's docs, "Using secrets in a workflow")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "ci.yml"
ENV_REF = re.compile(r"\benv\.([A-Za-z_][A-Za-z0-9_]*)")


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def condition_problems(flow: dict[str, Any]) -> list[str]:
    problems = []
    for job_name, job in flow["jobs"].items():
        visible = set(flow.get("env", {})) | set(job.get("env", {}))
        for step in job.get("steps", []):
            condition = str(step.get("if", ""))
            where = f"{job_name}/{step.get('name', step.get('uses', step.get('run', '?')))}"
            if "secrets." in condition:
                problems.append(f"{where}: `if` reads the secrets context, which it cannot")
            for name in ENV_REF.findall(condition):
                if name not in visible:
                    own = " (only the step's own env sets it)" if name in step.get("env", {}) else ""
                    problems.append(f"{where}: `if` reads env.{name}, which no workflow or job env sets{own}")
    return problems


def test_every_step_condition_reads_only_what_it_can_see() -> None:
    flow = workflow()
    assert condition_problems(flow) == []
    notify = [s for j in flow["jobs"].values() for s in j.get("steps", []) if s.get("name") == "Tell Slack"]
    assert len(notify) == 1 and "always()" in notify[0]["if"]  # it also reports a failed deploy


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"name": "Tell Slack", "if": "always() && env.HOOK != ''", "env": {"HOOK": "${{ secrets.HOOK }}"}},
         "only the step's own env sets it"),
        ({"name": "Tell Slack", "if": "secrets.HOOK != ''"}, "secrets context"),
    ],
)  # fmt: skip
def test_the_check_catches_a_condition_that_can_never_be_true(step: dict[str, Any], expected: str) -> None:
    flow = {"jobs": {"deploy": {"env": {}, "steps": [step]}}}
    assert any(expected in p for p in condition_problems(flow))
