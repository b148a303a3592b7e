"""Every role declares each of its variables in meta/argument_specs.yml with its default, and documents it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p.parent.parent for p in (Path(__file__).resolve().parent.parent / "roles").glob("*/meta/main.yml"))


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_defaults_specs_and_readme_agree(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, value in defaults.items():
        assert name.startswith(f"{role.name}_"), f"{name} is not prefixed with {role.name}_"
        assert options[name]["default"] == value, name
        assert options[name].get("description"), name
    readme = (role / "README.md").read_text()
    missing = [name for name in defaults if f"`{name}`" not in readme]
    assert not missing, f"{role.name}/README.md does not document {missing}"


# Roles that run on the controller against AWS: tested against the moto server by these modules instead of Molecule.
CONTROLLER_ROLES = {"aws_stack": "test_stack.py", "lambda_deploy": "test_lambda_deploy.py"}
NODE_ROLES = [r for r in ROLES if r.name not in CONTROLLER_ROLES]


@pytest.mark.parametrize("role", [r for r in ROLES if r.name in CONTROLLER_ROLES], ids=lambda r: r.name)
def test_controller_roles_have_their_moto_tests(role: Path) -> None:
    test = Path(__file__).parent / CONTROLLER_ROLES[role.name]
    assert test.exists() and "play(" in test.read_text()


@pytest.mark.parametrize("role", NODE_ROLES, ids=[r.name for r in NODE_ROLES])
def test_every_role_has_a_molecule_scenario_with_checks(role: Path) -> None:
    scenario = role / "molecule" / "default"
    assert (scenario / "molecule.yml").exists() and (scenario / "converge.yml").exists()
    tests = list((scenario / "tests").glob("test_*.py"))
    assert tests and all("assert" in t.read_text() for t in tests)


def test_the_queue_redis_acl_is_the_contracts() -> None:
    """The role cannot import the contract at converge time: its copy of the rules is held to jobqueue/acl.py."""
    from jobqueue import acl  # noqa: PLC0415

    role = next(r for r in ROLES if r.name == "queue_redis")
    role_vars = yaml.safe_load((role / "vars" / "main.yml").read_text())
    assert {name: " ".join(rules.split()) for name, rules in role_vars["__queue_redis_rules"].items()} == acl.USERS
