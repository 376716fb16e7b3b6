"""Optional signing of task messages with `BACKFILL_MESSAGE_KEY` (an HMAC of the body).

A worker that holds the key runs only messages a coordinator holding the same
key signed: a message forged by anyone who can publish to the broker (or
altered on the way) is refused as malformed, before any claim is attempted.
Without the key nothing is signed or checked: the claim still makes any forged
message harmless at worst (it can only ask for a try the database shows as
queued), and JSON is the only format ever accepted.

Invariants:
- the signature is HMAC-SHA256 over the message's keyword arguments as
  canonical JSON (sorted keys, no spaces), carried as one more keyword
  argument, `signature`; compared in constant time;
- the key itself is never printed, logged or stored (`Settings` leaves it out
  of its repr).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from backfill.errors import BadMessage

SIGNATURE = "signature"


def sign(kwargs: dict[str, Any], key: str | None) -> dict[str, Any]:
    """`kwargs` with their signature added; as they are without a key."""
    return kwargs if key is None else {**kwargs, SIGNATURE: _mac(kwargs, key)}


def verified(kwargs: dict[str, Any], key: str | None) -> dict[str, Any]:
    """`kwargs` without their signature, checked against `key`; `BadMessage` if a key is
    held and the signature is missing or wrong. Without a key a signature is ignored."""
    body = {name: value for name, value in kwargs.items() if name != SIGNATURE}
    if key is None:
        return body
    signature = kwargs.get(SIGNATURE)
    if not isinstance(signature, str) or not hmac.compare_digest(signature, _mac(body, key)):
        raise BadMessage(
            "unsigned or forged message: its signature does not match BACKFILL_MESSAGE_KEY "
            "(give the coordinators and the workers the same key)"
        )
    return body


def _mac(body: dict[str, Any], key: str) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()
