"""The suite's own rule for missing tools: a test skips locally but fails where CI (or a
SCENARIO_GAN_REQUIRE_* flag) says it must run."""

import pytest

from .conftest import require


def test_a_missing_tool_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SCENARIO_GAN_REQUIRE_X", raising=False)
    with pytest.raises(pytest.skip.Exception, match="the X tool is missing; install it"):
        require(False, "the X tool", "install it", flag="SCENARIO_GAN_REQUIRE_X")
    require(True, "the X tool", "install it")  # present: nothing happens


@pytest.mark.parametrize("env", [{"CI": "true"}, {"SCENARIO_GAN_REQUIRE_X": "1"}])
def test_a_missing_tool_fails_where_the_test_must_run(monkeypatch, env):
    monkeypatch.delenv("CI", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(pytest.fail.Exception, match="the X tool is missing; install it .required here"):
        require(False, "the X tool", "install it", flag="SCENARIO_GAN_REQUIRE_X")
