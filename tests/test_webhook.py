"""webhook.judge: the verdict for each provider's headers and body (no I/O)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from configsync.webhook import MAX_BODY, Delivery, Replays, Verdict, judge, open_delivery

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


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"payload=%7B%22ref%22%3A+%22refs%2Fheads%2Fmain%22%7D", 202,
     "a push to the tracked branch: sync requested"),
    (b"payload=%7B%7D", 400, 'a push event without a "ref" string'),
    (b"payload=%7B&payload=%7B", 400, "a form-encoded body without a JSON payload field"),
    (b"other=1", 400, "a form-encoded body without a JSON payload field"),
    (b"\xff=\xfe", 400, "a form-encoded body without a JSON payload field"),
])
def test_a_form_encoded_payload_is_read(body: bytes, status: int, reason: str) -> None:
    # GitHub's other content type: the HMAC covers the form, the push is its payload field
    sig = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    verdict = judge({"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}",
                     "Content-Type": "application/x-www-form-urlencoded"}, body, secret="k",
                    branch="main")
    assert (verdict.status, verdict.reason) == (status, reason)


SYSTEM = {"X-Gitlab-Event": "System Hook", "X-Gitlab-Token": "k"}


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b'{"event_name": "push", "ref": "refs/heads/main"}', 202,
     "a push to the tracked branch: sync requested"),
    (b'{"event_name": "push", "ref": "refs/heads/other"}', 204, "not the tracked branch"),
    (b'{"event_name": "tag_push", "ref": "refs/tags/v1"}', 204, "not a push event"),
    (b'{"object_kind": "push", "ref": "refs/heads/main"}', 202,
     "a push to the tracked branch: sync requested"),
    (b'{"object_kind": "tag_push", "event_name": "tag_push", "ref": "refs/heads/main"}', 204,
     "not a push event"),
    (b'{"event_name": "project_create"}', 204, "not a push event"),
    (b'["push"]', 400, 'a push event without a "ref" string'),
])
def test_a_gitlab_system_hook_is_judged_by_its_event_name(body: bytes, status: int,
                                                           reason: str) -> None:
    verdict = judge(SYSTEM, body, secret="k", branch="main")
    assert (verdict.status, verdict.reason) == (status, reason)


def test_gogs_signs_like_gitea() -> None:
    headers = {"X-Gogs-Event": "push", "X-Gogs-Signature": SIG}
    assert judge(headers, BODY, secret="k", branch="main").status == 202
    assert judge({**headers, "X-Gogs-Signature": "0" * 64}, BODY, secret="k",
                 branch="main").status == 401


@pytest.mark.parametrize(("headers", "status"), [
    ({"X-GitHub-Event": "push"}, 401),  # no signature: refused before the body
    ({"X-Gitea-Event": "push", "X-Hub-Signature-256": "sha256=0"}, 401),
    ({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "wrong"}, 401),
    ({"X-Gitlab-Event": "Push Hook"}, 401),
    ({"Content-Type": "application/json"}, 400),
])
def test_what_the_headers_alone_refuse(headers: dict[str, str], status: int) -> None:
    verdict = open_delivery(headers, secret="k")
    assert isinstance(verdict, Verdict) and verdict.status == status


def test_a_body_is_verified_as_it_streams_and_kept_only_in_part() -> None:
    body = b'{"ref": "refs/heads/main", "pad": "' + b"x" * (3 * MAX_BODY) + b'"}'
    sig = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    delivery = open_delivery({"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sig}"},
                             secret="k")
    assert isinstance(delivery, Delivery)
    for start in range(0, len(body), 65536):
        delivery.feed(body[start:start + 65536])
    assert len(delivery._kept) == MAX_BODY
    verdict = delivery.verdict(branch="main")
    assert (verdict.status, verdict.outcome) == (202, "accepted")
    wrong = open_delivery({"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + SIG},
                          secret="k")
    assert isinstance(wrong, Delivery)
    wrong.feed(body)
    assert wrong.verdict(branch="main").status == 401


def test_texts_a_peer_sent_are_clipped_in_a_verdict() -> None:
    verdict = judge({"X-GitHub-Event": "e" * 10_000, "X-GitHub-Delivery": "d" * 10_000},
                    BODY, secret="k", branch="main")
    assert verdict.status == 401
    assert len(verdict.event or "") <= 121 and len(verdict.delivery or "") <= 121


def test_replays_are_known_by_id_or_by_body() -> None:
    replays = Replays(size=3)
    assert not replays.seen(("body:a", "id:1"))
    assert replays.seen(("body:a", "id:2"))  # the same body, a new (unsigned) id
    assert replays.seen(("body:b", "id:1"))  # the same id
    assert not replays.seen(("body:c",))
    assert not replays.seen(("body:d",))
    assert not replays.seen(("body:e",))
    assert not replays.seen(("body:a",))  # forgotten: only the last `size` are kept
