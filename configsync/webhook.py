"""Push webhooks from GitHub, GitLab, Gitea and Forgejo: who sent it, is it signed, does it
ask for a sync. No I/O: ``server.py`` hands in the headers and the raw body.

Every request is authenticated before anything in it is believed: an HMAC-SHA256 of the raw
body (GitHub ``X-Hub-Signature-256: sha256=<hex>``; Gitea and Forgejo ``X-Gitea-Signature`` /
``X-Forgejo-Signature: <hex>``) or GitLab's shared token (``X-Gitlab-Token``), each compared
in constant time (``hmac.compare_digest``). Gitea and Forgejo also send GitHub's headers, so
they are recognised first.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Verdict", "judge"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to answer: 202 (a push to the tracked branch: sync now), 204 (nothing to do: a
    ping, another branch, a tag, another event), 400 (unreadable), 401 (not signed by us)."""

    status: int
    outcome: str  # accepted, ignored, bad_request, unauthorized (a label of the metric)
    reason: str
    provider: str | None = None
    event: str | None = None
    ref: str | None = None
    delivery: str | None = None


# provider: (event header, push event, ping event, delivery header)
_PROVIDERS = {
    "forgejo": ("x-forgejo-event", "push", None, "x-forgejo-delivery"),
    "gitea": ("x-gitea-event", "push", None, "x-gitea-delivery"),
    "gitlab": ("x-gitlab-event", "Push Hook", None, "x-gitlab-event-uuid"),
    "github": ("x-github-event", "push", "ping", "x-github-delivery"),
}


def judge(headers: Mapping[str, str], body: bytes, *, secret: str, branch: str) -> Verdict:
    """The answer to a POST of ``body`` with ``headers`` (any case) for a daemon following
    ``branch`` whose webhook secret is ``secret``."""
    lower = {name.lower(): value for name, value in headers.items()}
    provider = next((p for p, spec in _PROVIDERS.items() if spec[0] in lower), None)
    if provider is None:
        return Verdict(400, "bad_request", "no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event "
                                           "or X-Forgejo-Event header")
    header, push, ping, delivery_header = _PROVIDERS[provider]
    event, delivery = lower[header], lower.get(delivery_header)

    def verdict(status: int, outcome: str, reason: str, ref: str | None = None) -> Verdict:
        return Verdict(status, outcome, reason, provider, event, ref, delivery)

    if not _authentic(provider, lower, body, secret.encode()):
        return verdict(401, "unauthorized", "signature or token missing or wrong")
    if event == ping:
        return verdict(204, "ignored", "ping")
    if event != push:
        return verdict(204, "ignored", "not a push event")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # (UnicodeDecodeError too; nesting deeper than
        # Python's stack, which a valid signature does not make any safer)
        if lower.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return verdict(400, "bad_request", "a form-encoded payload: set the webhook's "
                                               "content type to application/json")
        return verdict(400, "bad_request", "the body is not JSON")
    ref = payload.get("ref") if isinstance(payload, dict) else None
    if not isinstance(ref, str):
        return verdict(400, "bad_request", "a push event without a \"ref\" string")
    if ref != f"refs/heads/{branch}":
        return verdict(204, "ignored", "not the tracked branch", ref)
    return verdict(202, "accepted", "a push to the tracked branch: sync requested", ref)


def _authentic(provider: str, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    if provider == "gitlab":
        return _same(headers.get("x-gitlab-token"), secret)
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    if provider == "github":
        given = headers.get("x-hub-signature-256")
        return given is not None and given.startswith("sha256=") and _same(
            given.removeprefix("sha256=").lower(), digest)
    given = headers.get(f"x-{provider}-signature")
    return _same(given.lower() if given is not None else None, digest)


def _same(given: str | None, expected: bytes) -> bool:
    """Constant-time comparison of a header's text with the expected bytes (any text a
    client sends compares, never raises)."""
    if given is None:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected)
