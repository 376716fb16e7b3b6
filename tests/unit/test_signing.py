"""`backfill.signing`: HMAC signatures of task messages with BACKFILL_MESSAGE_KEY."""

from __future__ import annotations

import pytest

from backfill.config import Settings
from backfill.errors import BadMessage
from backfill.signing import SIGNATURE, sign, verified

BODY = {"ti_id": 7, "try_number": 1, "dag_id": "d", "task_id": "t"}


def test_a_signed_message_verifies_with_its_key_and_loses_its_signature() -> None:
    signed = sign(BODY, "k")
    assert set(signed) == {*BODY, SIGNATURE}
    assert verified(signed, "k") == BODY
    assert verified(dict(reversed(list(signed.items()))), "k") == BODY  # order is not signed


@pytest.mark.parametrize(
    "message",
    [BODY, sign(BODY, "other"), {**sign(BODY, "k"), "try_number": 2}, {**BODY, SIGNATURE: 5}],
    ids=["unsigned", "another key", "altered", "not a string"],
)
def test_a_worker_with_a_key_refuses_what_it_did_not_sign(message: dict[str, object]) -> None:
    with pytest.raises(BadMessage, match="unsigned or forged message"):
        verified(message, "k")


def test_without_a_key_nothing_is_signed_or_checked() -> None:
    assert sign(BODY, None) == BODY
    assert verified(sign(BODY, "k"), None) == BODY


def test_the_key_comes_from_the_environment_and_is_never_shown() -> None:
    settings = Settings.from_env({"BACKFILL_MESSAGE_KEY": "s3cret"})
    assert settings.message_key == "s3cret"
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({"BACKFILL_MESSAGE_KEY": ""}).message_key is None
