"""Push webhooks from GitHub, GitLab, Gitea and Forgejo: who sent it, is it signed, does it
ask for a sync. No I/O: ``server.py`` hands in the headers and the raw body.

Every request is authenticated before anything in it is believed: an HMAC-SHA256 of the raw
body (GitHub ``X-Hub-Signature-256: sha256=<hex>``; Gitea and Forgejo ``X-Gitea-Signature`` /
``X-Forgejo-Signature: <hex>``) or GitLab's shared token (``X-Gitlab-Token``), each compared
in constant time (``hmac.compare_digest``). Gitea and Forgejo also send GitHub's headers, so
they are recognised first; Gogs signs like Gitea (``X-Gogs-Signature``). What the headers alone
can refuse (no event header, no signature, a wrong GitLab token) is refused before the body is
read; a body is streamed through the HMAC, so a signed push of any size is recognised.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

__all__ = ["MAX_BODY", "Delivery", "Replays", "Verdict", "judge", "open_delivery"]

MAX_BODY = 1024 * 1024
"""How much of a body is kept to read its ``ref`` (bytes). A longer signed push (a push of many
commits) is still authenticated, by a digest taken as it streams in, and asks for a sync
without naming its ref (issue 17, item 7)."""


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


# provider: (event header, push events, ping event, delivery header), most specific first:
# Forgejo sends Gitea's and Gogs's headers too, Gitea sends Gogs's and GitHub's.
_PROVIDERS = {
    "forgejo": ("x-forgejo-event", {"push"}, None, "x-forgejo-delivery"),
    "gitea": ("x-gitea-event", {"push"}, None, "x-gitea-delivery"),
    "gogs": ("x-gogs-event", {"push"}, None, "x-gogs-delivery"),
    # a System Hook carries every event of an instance: its body's event_name says which
    "gitlab": ("x-gitlab-event", {"Push Hook", "System Hook"}, None, "x-gitlab-event-uuid"),
    "github": ("x-github-event", {"push"}, "ping", "x-github-delivery"),
}

SHOWN = 120
"""The most characters of any text a peer sent (an event name, a delivery id, a ref) kept in
a verdict, and so in a log line or an answer."""


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= SHOWN else text[:SHOWN] + "…"


class Delivery:
    """One webhook request whose headers passed :func:`open_delivery`: :meth:`feed` it the
    body as it arrives (any size: only the first MAX_BODY bytes are kept, the signature and
    the replay digest cover all of it), then :meth:`verdict`."""

    def __init__(self, provider: str, headers: dict[str, str], secret: bytes) -> None:
        self.provider = provider
        self.headers = headers
        _, self.pushes, self.ping, delivery_header = _PROVIDERS[provider]
        self.event = headers[_PROVIDERS[provider][0]]
        self.delivery = headers.get(delivery_header)
        self._mac = None if provider == "gitlab" else hmac.new(secret, digestmod=hashlib.sha256)
        self._digest = hashlib.sha256()
        self._kept = bytearray()
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._mac is not None:
            self._mac.update(chunk)
        self._digest.update(chunk)
        if len(self._kept) < MAX_BODY:
            self._kept += chunk[:MAX_BODY - len(self._kept)]

    @property
    def replay_keys(self) -> tuple[str, ...]:
        """What a replay of this delivery repeats: its id (when the provider sends one) and
        its body (an id header is not signed, so a replay may carry a new one)."""
        body = f"body:{self.provider}:{self._digest.hexdigest()}"
        return (body,) if not self.delivery else (body, f"id:{self.provider}:{self.delivery}")

    def _verdict(self, status: int, outcome: str, reason: str, ref: str | None = None
                 ) -> Verdict:
        return Verdict(status, outcome, reason, self.provider, _clip(self.event), _clip(ref),
                       _clip(self.delivery))

    def verdict(self, *, branch: str) -> Verdict:
        """The answer once the whole body was fed."""
        if self._mac is not None:  # (GitLab's token was checked before the body)
            given = self.headers.get(_SIGNATURE[self.provider], "")
            if self.provider == "github":
                given = given.removeprefix("sha256=") if given.startswith("sha256=") else ""
            if not _same(given.lower(), self._mac.hexdigest().encode()):
                return self._verdict(401, "unauthorized", "signature or token missing or wrong")
        if self.event == self.ping:
            return self._verdict(204, "ignored", "ping")
        if self.event not in self.pushes:
            return self._verdict(204, "ignored", "not a push event")
        if self.size > MAX_BODY:  # authentic, but too long to keep: a sync finds out the rest
            return self._verdict(202, "accepted", f"a signed delivery over {MAX_BODY} bytes "
                                                  "(its ref unread): sync requested")
        form = self.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded")
        try:
            payload = json.loads(bytes(self._kept))
        except (ValueError, RecursionError):  # (UnicodeDecodeError too; nesting deeper than
            # Python's stack, which a valid signature does not make any safer)
            payload = _form_payload(bytes(self._kept)) if form else None
            if payload is None:
                return self._verdict(400, "bad_request", "a form-encoded body without a JSON "
                                     "payload field" if form else "the body is not JSON")
        if not isinstance(payload, dict):
            return self._verdict(400, "bad_request", "a push event without a \"ref\" string")
        if self.event == "System Hook" and "push" not in (payload.get("event_name"),
                                                           payload.get("object_kind")):
            return self._verdict(204, "ignored", "not a push event")
        ref = payload.get("ref")
        if not isinstance(ref, str):
            return self._verdict(400, "bad_request", "a push event without a \"ref\" string")
        if ref != f"refs/heads/{branch}":
            return self._verdict(204, "ignored", "not the tracked branch", ref)
        return self._verdict(202, "accepted", "a push to the tracked branch: sync requested",
                             ref)


def _form_payload(body: bytes) -> object | None:
    """The JSON in a form-encoded body's ``payload`` field (GitHub's and Gogs's other content
    type), or None."""
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=100, strict_parsing=True)
        return json.loads(fields["payload"][0]) if len(fields.get("payload", ())) == 1 else None
    except (ValueError, RecursionError):
        return None


_SIGNATURE = {"github": "x-hub-signature-256", "gitea": "x-gitea-signature",
              "forgejo": "x-forgejo-signature", "gogs": "x-gogs-signature"}


def open_delivery(headers: Mapping[str, str], *, secret: str) -> Delivery | Verdict:
    """What the headers alone decide, before a byte of the body is read (issue 17, item 6):
    a :class:`Verdict` (400 no provider's event header; 401 no signature header, or GitLab's
    token wrong), or the :class:`Delivery` to feed the body to."""
    lower = {name.lower(): value for name, value in headers.items()}
    provider = next((p for p, spec in _PROVIDERS.items() if spec[0] in lower), None)
    if provider is None:
        return Verdict(400, "bad_request", "no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, "
                                           "X-Forgejo-Event or X-Gogs-Event header")
    delivery = Delivery(provider, lower, secret.encode())
    if provider == "gitlab":
        authentic = _same(lower.get("x-gitlab-token"), secret.encode())
    else:
        authentic = _SIGNATURE[provider] in lower
    if not authentic:
        return delivery._verdict(401, "unauthorized", "signature or token missing or wrong")
    return delivery


def judge(headers: Mapping[str, str], body: bytes, *, secret: str, branch: str) -> Verdict:
    """The answer to a POST of ``body`` with ``headers`` (any case) for a daemon following
    ``branch`` whose webhook secret is ``secret`` (:func:`open_delivery`, then the body)."""
    delivery = open_delivery(headers, secret=secret)
    if isinstance(delivery, Verdict):
        return delivery
    delivery.feed(body)
    return delivery.verdict(branch=branch)


class Replays:
    """The last ``size`` accepted deliveries (their :attr:`Delivery.replay_keys`): one
    captured signed delivery sent again is answered without another sync (issue 17, item 7).
    No I/O, not thread-safe (the server's one event loop uses it)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, keys: tuple[str, ...]) -> bool:
        """Whether any of ``keys`` was remembered before; all of them are remembered now."""
        known = any(key in self._seen for key in keys)
        for key in keys:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return known


def _same(given: str | None, expected: bytes) -> bool:
    """Constant-time comparison of a header's text with the expected bytes (any text a
    client sends compares, never raises)."""
    if given is None:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected)
