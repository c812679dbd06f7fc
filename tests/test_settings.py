"""Settings: the safe defaults, and what is refused where the service runs."""
from __future__ import annotations

import pytest

from chalicelib.errors import InvalidSettings, TallyError
from chalicelib.settings import Settings


def test_the_api_is_protected_unless_a_stage_says_otherwise():
    assert Settings().api_auth == "iam"
    assert Settings.from_env({}).api_auth == "iam"
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "tally-new-map_object"}).api_auth == "iam"
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "x", "TALLY_API_AUTH": "api_key"}).api_auth == "api_key"


def test_local_mode_says_explicitly_that_its_loopback_api_has_no_authentication():
    from chalicelib.local.stack import LocalOptions, LocalTally

    settings = LocalTally(LocalOptions()).settings
    assert settings.api_auth == "none" != Settings().api_auth
    assert Settings.from_env(settings.as_env()).api_auth == "none"  # what its worker processes read


def test_an_unprotected_api_is_refused_on_lambda_when_the_settings_are_read():
    with pytest.raises(InvalidSettings, match="TALLY_API_AUTH=none"):
        Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "x", "TALLY_API_AUTH": "none"})
    assert Settings.from_env({"TALLY_API_AUTH": "none"}).api_auth == "none"  # off Lambda: local mode


def test_an_invalid_environment_is_the_same_typed_error():
    with pytest.raises(InvalidSettings, match="api_auth") as raised:
        Settings.from_env({"TALLY_API_AUTH": "open"})
    assert isinstance(raised.value, TallyError)

