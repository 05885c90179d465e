"""webhook.judge: the verdict for each provider's headers and body (no I/O)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from configsync.webhook import judge

BODY = b'{"ref": "refs/heads/main"}'
SIG = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("headers", "body", "status", "outcome"), [
    ({"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={SIG}"}, BODY, 202, "accepted"),
    ({"x-github-event": "push", "x-hub-signature-256": f"sha256={SIG.upper()}"}, BODY, 202,
     "accepted"),
    ({"X-GitHub-Event": "push", "X-Hub-Signature-256": SIG}, BODY, 401, "unauthorized"),
    ({"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=é"}, BODY, 401, "unauthorized"),
    ({"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=0"}, BODY, 401, "unauthorized"),
    ({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "k"}, BODY, 202, "accepted"),
    ({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "K"}, BODY, 401, "unauthorized"),
    ({"X-Gitea-Event": "push", "X-Gitea-Signature": SIG}, BODY, 202, "accepted"),
    ({"X-Forgejo-Event": "push", "X-Forgejo-Signature": SIG, "X-Gitea-Signature": "0"}, BODY,
     202, "accepted"),
    ({"X-Gitea-Event": "push", "X-Hub-Signature-256": f"sha256={SIG}"}, BODY, 401,
     "unauthorized"),
    ({"X-Gitea-Event": "push", "X-Gitea-Signature": SIG,
      "Content-Type": "application/x-www-form-urlencoded"}, BODY, 202, "accepted"),
    ({}, BODY, 400, "bad_request"),
])
def test_verdicts(headers: dict[str, str], body: bytes, status: int, outcome: str) -> None:
    verdict = judge(headers, body, secret="k", branch="main")
    assert (verdict.status, verdict.outcome) == (status, outcome)


def test_a_form_encoded_payload_says_what_to_set() -> None:
    body = b"payload=%7B%7D"
    sig = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    verdict = judge({"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}",
                     "Content-Type": "application/x-www-form-urlencoded"}, body, secret="k",
                    branch="main")
    assert (verdict.status, verdict.reason) == (400, "a form-encoded payload: set the "
                                                     "webhook's content type to application/json")
