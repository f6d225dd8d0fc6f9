"""The GET shortcut (issue 12.7) answers exactly what the FastAPI route answers, errors included.

``?owner=`` (empty: the caller's own) takes the FastAPI route; without a query string the shortcut answers."""

from __future__ import annotations

import json

from flex.api import TokenCreate
from tests.controlplane.conftest import Api

GIT = "https://host/org/repo.git"


async def test_the_shortcut_and_the_route_answer_alike(live: Api) -> None:
    await live.runner("r1")  # e1 gets bound, as in production
    alice = await live.admin.create_user("alice")
    await live.client(alice.token).create_environment("e1", git=GIT)
    await live.client(alice.token).patch_environment("e1", {"metadata": {"labels": {"team": "a"}}})
    read_only = (await live.client(alice.token).create_token(TokenCreate(scopes=["read"]))).token
    join = await live.admin.create_join_token()
    runner_token = (await live.client(None).join(join.token, "r2", "vm", {"cpus": 1, "memory": 1, "disk": 1})
                    ).credential
    cases = [(alice.token, "e1"), (read_only, "e1"), (alice.token, "nope"), (live.admin_token, "e1"),
             (runner_token, "e1"), ("flexu_wrong", "e1"), (None, "e1")]
    for token, name in cases:
        raw = live.raw(token)
        short = await raw.get(f"/api/v1/environments/{name}")
        routed = await raw.get(f"/api/v1/environments/{name}", params={"owner": ""})
        assert short.status_code == routed.status_code, (token, name, short.text, routed.text)
        assert json.loads(short.text) == json.loads(routed.text), (token, name)
        for header in ("etag", "content-type", "www-authenticate"):
            assert short.headers.get(header) == routed.headers.get(header), (token, name, header)
    statuses = [(await live.raw(t).get(f"/api/v1/environments/{n}")).status_code for t, n in cases]
    assert statuses == [200, 200, 404, 404, 403, 401, 401]
