"""The security, limit and operations settings (issue 18): parsed from the environment and
flags, refused with a message naming the setting."""

from __future__ import annotations

import pytest

from forecaster.cli.parser import build_parser
from forecaster.config import SECURITY_AND_LIMIT_SETTINGS, Settings
from forecaster.errors import InvalidArgumentError
from forecaster.limits import Limits


@pytest.mark.parametrize(
    "raw, value", [("false", False), ("0", False), ("TRUE", True), ("on", True)]
)
def test_booleans_from_the_environment(raw, value):
    assert Settings.from_env({"FORECASTER_OPEN_HEALTH": raw}).open_health is value


def test_a_boolean_that_is_not_one_is_refused():
    with pytest.raises(InvalidArgumentError, match="FORECASTER_TRACING must be a bool"):
        Settings.from_env({"FORECASTER_TRACING": "maybe"})


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"tls_cert": "c.pem"}, "tls_key"),
        ({"tls_client_ca": "ca.pem"}, "tls_cert"),
        ({"max_at_steps": 0}, "max_at_steps"),
        ({"max_name_chars": 190}, "max_name_chars"),
        ({"max_step_value": 2**60}, "max_step_value"),
        ({"page_size": 5000}, "max_page_size"),
        ({"stream_idle_timeout_s": 0}, "stream_idle_timeout_s"),
        ({"metrics_port": 70000}, "metrics_port"),
    ],
)
def test_bad_values_name_the_setting(fields, words):
    with pytest.raises(InvalidArgumentError, match=words):
        Settings(**fields)


def test_every_setting_of_the_block_is_a_serve_flag_and_a_limit_where_it_is_one():
    args = build_parser().parse_args(
        ["serve", "--max-at-steps", "7", "--no-open-health", "--tls-cert", "c.pem"]
    )
    assert (args.max_at_steps, args.open_health, args.tls_cert) == (7, False, "c.pem")
    assert all(hasattr(args, name) for name in SECURITY_AND_LIMIT_SETTINGS)
    limits = Limits.from_settings(Settings(max_at_steps=7))
    assert limits.max_at_steps == 7 and limits.page(field="page_size", requested=0) == 100
