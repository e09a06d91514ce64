"""The Studio's server side without a browser: the session cookie and its CSRF guards, API
keys, and the epochs extension (GET …/epochs, POST …:selectEpoch) that the model page uses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from service_harness import Service, create_body, wait_op

STUDIO = {"X-Tunelab-Studio": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("studio-server")).start()
    from tunelab.auth.accounts import Accounts
    from tunelab.config import Settings
    from tunelab.store import Store

    settings = Settings(home=svc.home)
    accounts = Accounts(Store.open(settings), settings)
    accounts.add_user("carol", "carol-password")
    accounts.add_user("dave", "dave-password")
    yield svc
    svc.stop()


def plain(server) -> httpx.Client:
    """A client with no credentials (the harness's own carries the owner's token)."""
    return httpx.Client(base_url=server.url, timeout=60)


def sign_in(c, user: str, password: str):
    r = c.post("/studio/login", json={"username": user, "password": password}, headers=STUDIO)
    assert r.status_code == 200, r.text
    return r


def test_page_and_redirects(server):
    with plain(server) as c:
        r = c.get("/")
        assert r.status_code == 307 and r.headers["location"] == "/studio/"
        page = c.get("/studio/")
        assert page.status_code == 200 and "js/app.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/studio/static/js/api.js").status_code == 200
        assert c.get("/studio/session").json() == {"user": None, "authEnabled": True}


def test_sign_in_cookie_session_and_sign_out(server):
    with plain(server) as bad:
        r = bad.post("/studio/login", json={"username": "carol", "password": "nope"},
                     headers=STUDIO)
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    with plain(server) as c:
        r = sign_in(c, "carol", "carol-password")
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/studio" in cookie
        assert "tunelab_studio" not in r.text  # the refresh token never reaches the page
        s = c.get("/studio/session").json()
        assert s["user"]["name"] == "carol" and s["accessToken"]
        auth = {"Authorization": f"Bearer {s['accessToken']}"}
        assert c.get("/v1beta/tunedModels", headers=auth).status_code == 200
        assert c.post("/studio/logout", headers=STUDIO).status_code == 200
        assert c.get("/studio/session").json()["user"] is None
        # signing out revoked the refresh token and every access token minted from it
        assert c.get("/v1beta/tunedModels", headers=auth).status_code == 401


@pytest.mark.parametrize("headers", [
    {},                                                     # no Studio header: a plain form
    {**STUDIO, "Origin": "http://evil.example"},            # another site's page
])
def test_csrf_guards(server, headers):
    with plain(server) as c:
        r = c.post("/studio/login", json={"username": "carol", "password": "carol-password"},
                   headers=headers)
        assert r.status_code == 403
        assert "set-cookie" not in r.headers


def test_api_keys(server):
    """The Studio's keys page uses the public /v1beta/apiKeys with its access token; the
    session cookie alone is not a credential for the REST API."""
    with plain(server) as c:
        sign_in(c, "carol", "carol-password")
        assert c.get("/v1beta/apiKeys").status_code == 401
        auth = {"Authorization": f"Bearer {c.get('/studio/session').json()['accessToken']}"}
        k = c.post("/v1beta/apiKeys", json={"displayName": "bot"}, headers=auth).json()
        assert k["keyString"].endswith(k["keyHint"]) and k["displayName"] == "bot"
        listed = c.get("/v1beta/apiKeys", headers=auth).json()["apiKeys"]
        assert [x["name"] for x in listed] == [k["name"]] and "keyString" not in listed[0]
        key = {"x-goog-api-key": k["keyString"]}
        assert c.get("/v1beta/models", headers=key).status_code == 200
        # a key cannot manage keys, not even revoke itself
        r = c.delete(f"/v1beta/{k['name']}", headers=key)
        assert r.status_code == 403
        assert r.json()["error"]["message"] == "Request had insufficient authentication scopes."
        assert c.delete(f"/v1beta/{k['name']}", headers=auth).status_code == 200
        assert c.get("/v1beta/apiKeys", headers=auth).json() == {}
        r = c.get("/v1beta/models", headers=key)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
        r = c.delete(f"/v1beta/{k['name']}x", headers=auth)
        assert r.status_code == 404 and "GET /v1beta/apiKeys" in r.json()["error"]["message"]
        long = c.post("/v1beta/apiKeys", json={"displayName": "x" * 101}, headers=auth)
        assert long.status_code == 400 and "at most 100" in long.json()["error"]["message"]


def test_epochs_and_select_epoch(server):
    with plain(server) as c:
        sign_in(c, "carol", "carol-password")
        auth = {"Authorization": f"Bearer {c.get('/studio/session').json()['accessToken']}"}
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "epochs-demo"},
                   json=create_body(epochs=3), headers=auth)
        assert r.status_code == 200, r.text
        c.headers.update(auth)
        op = wait_op(c, r.json()["name"], timeout=600)
        assert "error" not in op
        e = c.get("/v1beta/tunedModels/epochs-demo/epochs").json()
        assert [x["epoch"] for x in e["epochs"]] == [1, 2, 3]
        assert [x["lastStep"] for x in e["epochs"]] == [5, 10, 15]
        assert all(x["checkpoint"] for x in e["epochs"])
        assert e["selectedEpoch"] == 3 and e["exampleCount"] == 20
        assert {"epoch", "plateaued", "message"} <= e["advice"].keys()
        picked = c.post("/v1beta/tunedModels/epochs-demo:selectEpoch", json={"epoch": 1}).json()
        assert picked["selectedEpoch"] == 1
        gen = c.post("/v1beta/tunedModels/epochs-demo:generateContent",
                     json={"contents": [{"parts": [{"text": "word 1"}]}],
                           "generationConfig": {"maxOutputTokens": 4}})
        assert gen.status_code == 200, gen.text
        bad = c.post("/v1beta/tunedModels/epochs-demo:selectEpoch", json={"epoch": 9})
        assert bad.status_code == 400 and "between 1 and 3" in bad.json()["error"]["message"]
    with plain(server) as d:
        sign_in(d, "dave", "dave-password")
        d.headers["Authorization"] = f"Bearer {d.get('/studio/session').json()['accessToken']}"
        assert d.get("/v1beta/tunedModels/epochs-demo/epochs").status_code == 404
        assert d.post("/v1beta/tunedModels/epochs-demo:selectEpoch",
                      json={"epoch": 1}).status_code == 404
    # the example in docs/studio.md (last: the checks above have run when jq is missing)
    if shutil.which("jq") is None:
        pytest.skip("jq is needed for the docs/studio.md example (.ci/run installs it)")
    script = doc_example("selectEpoch")
    env = {**os.environ, "TUNELAB": server.url, "TOKEN": auth["Authorization"][7:],
           "MODEL": "tunedModels/epochs-demo"}
    out = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2"
    assert "epoch" in out.stdout.splitlines()[0]


def doc_example(word: str) -> str:
    """The bash example of docs/studio.md that mentions ``word``."""
    doc = (Path(__file__).parents[2] / "docs" / "studio.md").read_text()
    (script,) = [b for b in re.findall(r"```bash\n(.*?)```", doc, re.S) if word in b]
    return script


def test_dataset_preview_example_of_the_docs(server, tmp_path):
    if shutil.which("jq") is None:
        pytest.skip("jq is needed for the docs/studio.md example (.ci/run installs it)")
    with plain(server) as c:
        sign_in(c, "carol", "carol-password")
        token = c.get("/studio/session").json()["accessToken"]
    env = {**os.environ, "TUNELAB": server.url, "TOKEN": token}
    out = subprocess.run(["bash", "-c", "set -euo pipefail\n" + doc_example("datasets:preview")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[2,"two.csv","DUPLICATE_EXAMPLES"]'


def _auth(c) -> dict:
    return {"Authorization": f"Bearer {c.get('/studio/session').json()['accessToken']}"}


def test_own_permission_and_structured_sharing_errors(server):
    """What the model page builds on: the caller's own permission (so it shows only the
    controls the role allows), and sharing errors a client can word itself."""
    with plain(server) as c, plain(server) as d:
        sign_in(c, "carol", "carol-password")
        c.headers.update(_auth(c))
        r = c.post("/v1beta/tunedModels", params={"tunedModelId": "roles-demo"},
                   json=create_body(epochs=1))
        assert r.status_code == 200, r.text
        base = "/v1beta/tunedModels/roles-demo/permissions"
        mine = c.get(base + ":mine").json()
        assert mine == {"name": "tunedModels/roles-demo/permissions/owner", "role": "OWNER",
                        "granteeType": "USER", "emailAddress": "carol"}
        sign_in(d, "dave", "dave-password")
        d.headers.update(_auth(d))
        assert d.get(base + ":mine").status_code == 404  # not shared: as if it did not exist

        perm = c.post(base, json={"granteeType": "USER", "emailAddress": "dave",
                                  "role": "READER"}).json()
        assert d.get(base + ":mine").json() == perm
        everyone = c.post(base, json={"granteeType": "EVERYONE", "role": "READER"}).json()
        c.patch(f"/v1beta/{perm['name']}", json={"role": "WRITER"}, params={"updateMask": "role"})
        assert d.get(base + ":mine").json()["role"] == "WRITER"   # the strongest grant
        c.delete(f"/v1beta/{perm['name']}")
        assert d.get(base + ":mine").json() == everyone

        # sharing again: 409 that names the existing permission and says what to do
        again = c.post(base, json={"granteeType": "EVERYONE", "role": "READER"})
        assert again.status_code == 409
        err = again.json()["error"]
        assert "PATCH" not in err["message"] and "update that permission's role" in err["message"]
        assert err["details"][0]["reason"] == "ALREADY_SHARED"
        assert err["details"][0]["metadata"] == {"permission": everyone["name"], "role": "READER"}

        # an unknown user: said without CLI commands, with a reason to word it by
        unknown = c.post(base, json={"granteeType": "USER", "emailAddress": "nobody",
                                     "role": "READER"})
        assert unknown.status_code == 400
        err = unknown.json()["error"]
        assert "tunelab users" not in err["message"] and "'nobody' is not a user" in err["message"]
        assert err["details"][0]["reason"] == "USER_NOT_FOUND"


def test_data_problems_are_structured_field_violations(server):
    """Every problem of an upload as a google.rpc.BadRequest field violation: the example (or
    the column to choose) as a field path, the problem without its location as description."""
    rows = [f"w {i},W {i}" for i in range(1, 25)]
    rows[2] = "w 3,W 3,extra"
    rows[7] = "w 8,"
    with plain(server) as c:
        sign_in(c, "carol", "carol-password")
        c.headers.update(_auth(c))
        r = c.post("/v1beta/files",
                   files={"file": ("d.csv", "text_input,output\n" + "\n".join(rows) + "\n")})
        assert r.status_code == 400
        (bad,) = r.json()["error"]["details"]
        assert bad["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        fields = [(v["field"], v["description"][:22]) for v in bad["fieldViolations"]]
        assert fields == [("examples[2]", "has 3 fields but the h"),
                          ("examples[7].output", "the output is empty; w")]
        r = c.post("/v1beta/files", files={"file": ("d.csv", "ticket,category\na,b\n")})
        fields = [v["field"] for v in r.json()["error"]["details"][0]["fieldViolations"]]
        assert fields == ["inputColumn", "outputColumn"]
