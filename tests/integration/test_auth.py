"""Authentication and authorization against a real server: the endpoint × credential matrix,
OAuth grants, sharing, list filters, limits, users and keys from the CLI, and that no secret
leaks into the store, the log, error messages or the OpenAPI document."""

from __future__ import annotations

import itertools
import json
import stat
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from service_harness import Service, create_body, wait_op
from sqlalchemy import update

from tunelab.store import JobRow, OperationRow, TunedModelRow
from tunelab.store.tables import OAuthTokenRow, utcnow

CSV = "text_input,output\n" + "".join(f"word {i},WORD {i}\n" for i in range(20))
GEN = {"contents": [{"role": "user", "parts": [{"text": "word 3"}]}],
       "generationConfig": {"maxOutputTokens": 2}}
_seq = itertools.count()


class World:
    """alice owns the models; rita may read them, walt may write them; bob is a stranger."""

    def __init__(self, svc: Service):
        self.svc = svc
        self.acc = svc.accounts()
        self.pw = {}
        for name in ("alice", "bob", "rita", "walt"):
            _, self.pw[name] = self.acc.add_user(name, email=f"{name}@example.com")
        # the matrix makes a fresh model per case that changes one: more than the default cap
        self.acc.set_limits("alice", None, 10_000)
        self.key = self.acc.create_key("alice", "matrix")[1]
        revoked, self.revoked_key = self.acc.create_key("alice", "revoked")
        self.acc.revoke_key(revoked.id, None)
        tok = self.token
        self.tokens = {
            "expired": tok("alice", "tuning"),
            "no_tuning_scope": tok("alice", "generative-language"),
            "tuning": tok("alice", "tuning"),
            "other_user": tok("bob", "cloud-platform"),
            "reader": tok("rita", "tuning"),
            "writer": tok("walt", "tuning"),
        }
        from tunelab.auth.secrets import token_hash

        with self.acc.store.session() as s:
            s.execute(update(OAuthTokenRow)
                      .where(OAuthTokenRow.token_hash == token_hash(self.tokens["expired"]))
                      .values(expires_at=utcnow() - timedelta(seconds=1)))
        with svc.client(self.tokens["tuning"]) as c:
            op = c.post("/v1beta/tunedModels", params={"tunedModelId": "m-alice"},
                        json=create_body(epochs=1)).json()
            assert "error" not in wait_op(c, op["name"])
            self.op = op["name"]
            self.file = c.post("/v1beta/files", files={"file": ("d.csv", CSV)}).json()["name"]
        m = self.acc.require("m-alice", "alice", "OWNER")
        self.acc.create_permission(m, "USER", "rita@example.com", "READER")
        self.acc.create_permission(m, "USER", "walt", "WRITER")

    def token(self, user: str, scope: str) -> str:
        return self.svc.oauth_token(username=user, password=self.pw[user], scope=scope)

    def fresh_model(self) -> dict:
        """A finished (FAILED, no adapter) model of alice's, shared like m-alice; cheap."""
        mid = f"fresh-{next(_seq)}"
        op = f"tunedModels/{mid}/operations/o"
        self.acc.store.create_tuned_model(
            TunedModelRow(id=mid, owner="alice", display_name="", description="",
                          base_model="models/tiny-random", state="FAILED", state_message="",
                          cancelled=False, epoch_count=1, batch_size=4, learning_rate=0.01,
                          example_count=20, total_steps=5),
            OperationRow(name=op, tuned_model_id=mid, owner="alice", done=True),
            JobRow(tuned_model_id=mid, operation=op, owner="alice", state="done",
                   cancel_requested=False, attempts=1, completed_steps=5, spec={}),
            None)
        m = self.acc.require(mid, "alice", "OWNER")
        rp = self.acc.create_permission(m, "USER", "rita", "READER")["name"]
        self.acc.create_permission(m, "USER", "walt", "WRITER")
        return {"fresh": mid, "fresh_op": op, "fresh_perm": rp.rsplit("/", 1)[1]}

    def fresh_file(self) -> str:
        with self.svc.client(self.tokens["tuning"]) as c:
            return c.post("/v1beta/files", files={"file": ("d.csv", CSV)}).json()["name"]

    def headers(self, cred: str) -> dict:
        if cred == "none":
            return {}
        if cred in ("bad_key", "revoked_key", "key"):
            return {"x-goog-api-key": {"bad_key": "tlk_not-a-key", "key": self.key,
                                       "revoked_key": self.revoked_key}[cred]}
        return {"Authorization": f"Bearer {self.tokens[cred]}"}


@pytest.fixture(scope="module")
def world(service):
    return World(service)


CREDS = ["none", "bad_key", "revoked_key", "key", "expired", "no_tuning_scope", "tuning",
         "other_user", "reader", "writer"]
STATUS = {200: None, 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND"}
T = "/v1beta/tunedModels"
V = "/v1/projects/p/locations/l"
PERM = {"granteeType": "USER", "emailAddress": "bob@example.com", "role": "READER"}


def _tiny_adapter() -> dict:
    """A minimal valid LoRA adapter of the tiny model (rank 2 on one layer), as upload parts."""
    import torch
    from safetensors.torch import save

    m = "base_model.model.model.layers.0.self_attn.q_proj"
    weights = save({f"{m}.lora_A.weight": torch.zeros(2, 64),
                    f"{m}.lora_B.weight": torch.zeros(64, 2)})
    config = json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2,
                         "lora_alpha": 4, "target_modules": ["q_proj"]})
    return {"data": {"baseModel": "models/tiny-random"},
            "files": {"adapterConfig": ("adapter_config.json", config),
                      "adapterModel": ("adapter_model.safetensors", weights)}}

# endpoint (its name in auth/rules.py): method, path, request, expected codes in CREDS order
MATRIX = {
    "list_models": ("get", "/v1beta/models", {}, "401 400 400 200 401 200 200 200 200 200"),
    "get_model": ("get", "/v1beta/models/tiny-random", {},
                   "401 400 400 200 401 200 200 200 200 200"),
    "models.generateContent": ("post", "/v1beta/models/tiny-random:generateContent",
                               {"json": GEN}, "401 400 400 200 401 200 200 200 200 200"),
    "models.countTokens": ("post", "/v1beta/models/tiny-random:countTokens",
                           {"json": {"contents": GEN["contents"]}},
                           "401 400 400 200 401 200 200 200 200 200"),
    "list_tuned_models": ("get", T, {}, "401 400 400 200 401 403 200 200 200 200"),
    "get_tuned_model": ("get", T + "/m-alice", {}, "401 400 400 200 401 403 200 404 200 200"),
    "list_operations": ("get", T + "/m-alice/operations", {},
                        "401 400 400 200 401 403 200 404 200 200"),
    "get_operation": ("get", "/v1beta/{op}", {}, "401 400 400 200 401 403 200 404 200 200"),
    "tunedModels.generateContent": ("post", T + "/m-alice:generateContent", {"json": GEN},
                                    "401 400 400 200 401 200 200 404 200 200"),
    "tunedModels.streamGenerateContent": (
        "post", T + "/m-alice:streamGenerateContent?alt=sse", {"json": GEN},
        "401 400 400 200 401 200 200 404 200 200"),
    "models.streamGenerateContent": ("post", "/v1beta/models/tiny-random:streamGenerateContent",
                                     {"json": GEN}, "401 400 400 200 401 200 200 200 200 200"),
    "get_epochs": ("get", T + "/m-alice/epochs", {}, "401 400 400 200 401 403 200 404 200 200"),
    "select_epoch": ("post", T + "/m-alice:selectEpoch", {"json": {"epoch": 1}},
                     "401 400 400 403 401 403 200 404 403 200"),
    # scores models by calling them: what generateContent needs
    "evaluate_tuned_model": ("post", T + "/m-alice:evaluate", {"json": {
        "testData": {"examples": {"examples": [{"textInput": "a", "output": "b"}]}}}},
        "401 400 400 200 401 200 200 404 200 200"),
    # weights leave the server: OAuth only, and WRITER (a READER may call, not take)
    "export_tuned_model": ("get", T + "/m-alice:export", {"params": {"format": "peft"}},
                           "401 400 400 403 401 403 200 404 403 200"),
    "import_tuned_model": ("post", T + ":import", _tiny_adapter(),
                           "401 400 400 403 401 403 200 200 200 200"),
    "tunedModels.countTokens": ("post", T + "/m-alice:countTokens",
                                {"json": {"contents": GEN["contents"]}},
                                "401 400 400 200 401 200 200 404 200 200"),
    "create_tuned_model": ("post", T, {"json": create_body(epochs=1)},
                           "401 400 400 403 401 403 200 200 200 200"),
    "update_tuned_model": ("patch", T + "/m-alice", {"json": {"description": "patched"}},
                          "401 400 400 403 401 403 200 404 403 200"),
    "delete_tuned_model": ("delete", T + "/{fresh}", {},
                           "401 400 400 403 401 403 200 404 403 403"),
    "cancel_tuned_model": ("post", T + "/{fresh}:cancel", {},
                           "401 400 400 403 401 403 200 404 403 200"),
    "cancel_operation": ("post", "/v1beta/{fresh_op}:cancel", {},
                          "401 400 400 403 401 403 200 404 403 200"),
    "list_permissions": ("get", T + "/m-alice/permissions", {},
                         "401 400 400 403 401 200 200 404 403 200"),
    "get_permission": ("get", T + "/m-alice/permissions/owner", {},
                        "401 400 400 403 401 200 200 404 403 200"),
    "get_own_permission": ("get", T + "/m-alice/permissions:mine", {},
                           "401 400 400 200 401 200 200 404 200 200"),
    "create_permission": ("post", T + "/{fresh}/permissions", {"json": PERM},
                           "401 400 400 403 401 200 200 404 403 200"),
    "update_permission": ("patch", T + "/{fresh}/permissions/{fresh_perm}?updateMask=role",
                          {"json": {"role": 2}}, "401 400 400 403 401 200 200 404 403 200"),
    "delete_permission": ("delete", T + "/{fresh}/permissions/{fresh_perm}", {},
                           "401 400 400 403 401 200 200 404 403 200"),
    "transfer_ownership": ("post", T + "/{fresh}:transferOwnership",
                                      {"json": {"emailAddress": "bob"}},
                                      "401 400 400 403 401 200 200 404 403 403"),
    "upload_file": ("post", "/v1beta/files", {"files": {"file": ("d.csv", CSV)}},
                     "401 400 400 403 401 403 200 200 200 200"),
    "list_files": ("get", "/v1beta/files", {}, "401 400 400 200 401 403 200 200 200 200"),
    # the Studio's table: parsed and checked as an upload, nothing stored
    "preview_dataset": ("post", "/studio/datasets:preview", {"files": {"file": ("d.csv", CSV)}},
                        "401 400 400 403 401 403 200 200 200 200"),
    "get_file": ("get", "/v1beta/{file}", {}, "401 400 400 200 401 403 200 404 404 404"),
    "delete_file": ("delete", "/v1beta/{fresh_file}", {},
                     "401 400 400 403 401 403 200 404 404 404"),
    # keys are the caller's own: another user's key is 404 to everyone else
    "list_api_keys": ("get", "/v1beta/apiKeys", {}, "401 400 400 403 401 403 200 200 200 200"),
    "create_api_key": ("post", "/v1beta/apiKeys", {"json": {"displayName": "m"}},
                       "401 400 400 403 401 403 200 200 200 200"),
    "delete_api_key": ("delete", "/v1beta/{fresh_key}", {},
                       "401 400 400 403 401 403 200 404 404 404"),
    # the caller's own account: a new password too short is refused once the caller is known
    "change_password": ("post", "/v1beta/account:changePassword",
                        {"json": {"currentPassword": "x", "newPassword": "short"}},
                        "401 400 400 403 401 403 400 400 400 400"),
    # Vertex AI's tuning jobs (api/vertex/): the same models under the same rules
    "vertex.createTuningJob": ("post", V + "/tuningJobs", lambda names: {"json": {
        "baseModel": "tiny-random", "supervisedTuningSpec": {
            "trainingDatasetUri": names["file"], "hyperParameters": {"epochCount": 1}}}},
        "401 400 400 403 401 403 200 404 404 404"),  # the file is alice's
    "vertex.listTuningJobs": ("get", V + "/tuningJobs", {},
                              "401 400 400 200 401 403 200 200 200 200"),
    "vertex.getTuningJob": ("get", V + "/tuningJobs/m-alice", {},
                            "401 400 400 200 401 403 200 404 200 200"),
    "vertex.cancelTuningJob": ("post", V + "/tuningJobs/{fresh}:cancel", {},
                               "401 400 400 403 401 403 200 404 403 200"),
    "vertex.endpoints.generateContent": ("post", V + "/endpoints/m-alice:generateContent",
                                         {"json": GEN}, "401 400 400 200 401 200 200 404 200 200"),
    "vertex.endpoints.streamGenerateContent": (
        "post", V + "/endpoints/m-alice:streamGenerateContent?alt=sse", {"json": GEN},
        "401 400 400 200 401 200 200 404 200 200"),
    "vertex.endpoints.countTokens": ("post", V + "/endpoints/m-alice:countTokens",
                                     {"json": {"contents": GEN["contents"]}},
                                     "401 400 400 200 401 200 200 404 200 200"),
}
CASES = [(ep, cred, int(codes.split()[i]))
         for ep, (_, _, _, codes) in MATRIX.items() for i, cred in enumerate(CREDS)]


@pytest.mark.parametrize(("endpoint", "cred", "code"), CASES,
                         ids=[f"{e}-{c}" for e, c, _ in CASES])
def test_auth_matrix(world, endpoint, cred, code):
    method, path, kwargs, _ = MATRIX[endpoint]
    names = {"op": world.op, "file": world.file}
    if "{fresh" in path:
        names.update(world.fresh_model())
    if "{fresh_file}" in path:
        names["fresh_file"] = world.fresh_file()
    if "{fresh_key}" in path:
        names["fresh_key"] = f"apiKeys/{world.acc.create_key('alice', 'fresh')[0].id}"
    if callable(kwargs):  # a request body naming one of the world's resources
        kwargs = kwargs(names)
    with httpx.Client(base_url=world.svc.url, timeout=60) as c:
        r = c.request(method.upper(), path.format(**names), headers=world.headers(cred),
                      **kwargs)
    assert r.status_code == code, r.text
    if code != 200:
        err = r.json()["error"]
        assert err["status"] == STATUS[code] and err["code"] == code
        if cred in ("bad_key", "revoked_key"):
            assert err["message"] == "API key not valid. Please pass a valid API key."
            assert err["details"][0]["reason"] == "API_KEY_INVALID"
        elif code == 403 and cred in ("key", "no_tuning_scope"):
            assert err["message"] == "Request had insufficient authentication scopes."


def test_every_route_has_a_rule_and_is_in_the_matrix(service):
    from fastapi.routing import APIRoute

    from tunelab.api.app import create_app
    from tunelab.api.deps import current_principal
    from tunelab.auth.rules import RULES
    from tunelab.config import Settings

    app = create_app(Settings(home=service.home / "routes-check"))
    guarded = set()

    def walk(routes):
        for r in routes:
            if isinstance(r, APIRoute):
                deps = {d.call for d in r.dependant.dependencies}
                if current_principal in deps:
                    guarded.add(r.name)
            inner = getattr(r, "original_router", None) or getattr(r, "router", None)
            walk(getattr(r, "routes", None) or getattr(inner, "routes", None) or [])

    walk(app.router.routes)
    assert guarded, "no guarded routes found"
    assert guarded <= set(RULES), guarded - set(RULES)
    assert set(MATRIX) == set(RULES)


def test_bearer_wins_over_key(world):
    # google-genai sends its (placeholder) key along with the Authorization header
    h = {"x-goog-api-key": "tlk_placeholder", **world.headers("tuning")}
    assert httpx.get(world.svc.url + T + "/m-alice", headers=h).status_code == 200
    assert httpx.get(world.svc.url + T + "/m-alice",
                     params={"key": world.key}).status_code == 200


def test_oauth_grants_and_revocation(world):
    url = world.svc.url + "/oauth2/token"
    r = httpx.post(url, data={"grant_type": "password", "username": "alice", "password": "no"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(url, data={"grant_type": "password", "username": "alice@example.com",
                              "password": world.pw["alice"], "scope": "tuning.readonly"})
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "Bearer"
    assert body["scope"] == "https://www.googleapis.com/auth/generative-language.tuning.readonly"
    assert body["expires_in"] == 3600 and r.headers["cache-control"] == "no-store"
    ro = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(world.svc.url + T + "/m-alice", headers=ro).status_code == 200
    assert httpx.patch(world.svc.url + T + "/m-alice", headers=ro,
                       json={"description": "x"}).status_code == 403
    # refresh: same scopes, new access token; wider scopes are refused
    r2 = httpx.post(url, data={"grant_type": "refresh_token", "client_id": "tunelab",
                               "client_secret": "", "refresh_token": body["refresh_token"]})
    assert r2.status_code == 200 and r2.json()["access_token"] != body["access_token"]
    r3 = httpx.post(url, data={"grant_type": "refresh_token", "scope": "tuning",
                               "refresh_token": body["refresh_token"]})
    assert r3.status_code == 400 and r3.json()["error"] == "invalid_scope"
    assert httpx.post(url, data={"grant_type": "password", "username": "alice",
                                 "password": world.pw["alice"], "scope": "nope"}
                      ).json()["error"] == "invalid_scope"
    assert httpx.post(url, data={"grant_type": "implicit"}).json()["error"] == \
        "unsupported_grant_type"
    # revoking the refresh token ends it and its access tokens
    httpx.post(world.svc.url + "/oauth2/revoke", data={"token": body["refresh_token"]})
    new = {"Authorization": f"Bearer {r2.json()['access_token']}"}
    r = httpx.get(world.svc.url + T + "/m-alice", headers=new)
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    assert httpx.post(url, data={"grant_type": "refresh_token",
                                 "refresh_token": body["refresh_token"]}).status_code == 400


def test_service_account_client_credentials(world):
    acc = world.acc
    acc.add_user("robot", None, kind="service")
    cid, secret = acc.create_client("robot", "tuning")
    url = world.svc.url + "/oauth2/token"
    r = httpx.post(url, data={"grant_type": "client_credentials"}, auth=(cid, secret))
    assert r.status_code == 200 and "refresh_token" not in r.json()
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert httpx.get(world.svc.url + T, headers=h).status_code == 200
    bad = httpx.post(url, data={"grant_type": "client_credentials", "client_id": cid,
                                "client_secret": "tls_wrong"})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    # a service account has no password
    assert httpx.post(url, data={"grant_type": "password", "username": "robot",
                                 "password": "whatever1"}).status_code == 400


def test_sharing_filters_and_transfer(world):
    c_alice = world.svc.client(world.tokens["tuning"])
    c_rita = world.svc.client(world.tokens["reader"])
    c_bob = world.svc.client(world.tokens["other_user"])

    def names(c, flt=None):
        r = c.get(T, params={"filter": flt, "pageSize": 1000} if flt else {"pageSize": 1000})
        assert r.status_code == 200, r.text
        return {m["name"] for m in r.json().get("tunedModels", [])}

    assert "tunedModels/m-alice" in names(c_rita)
    assert "tunedModels/m-alice" in names(c_rita, "readers:me")
    assert "tunedModels/m-alice" not in names(c_rita, "writers:me")
    assert "tunedModels/m-alice" not in names(c_rita, "owner:me")
    assert "tunedModels/m-alice" in names(c_alice, "owner:me")
    assert "tunedModels/m-alice" not in names(c_bob)
    # shared with everyone (integer enums, as google-generativeai sends them)
    f = world.fresh_model()["fresh"]
    r = c_alice.post(f"{T}/{f}/permissions", json={"granteeType": 3, "role": 3})
    assert r.status_code == 200 and r.json()["granteeType"] == "EVERYONE", r.text
    assert f"tunedModels/{f}" in names(c_bob, "readers:everyone")
    assert f"tunedModels/{f}" not in names(c_bob)
    assert c_bob.get(f"{T}/{f}").status_code == 200
    assert c_bob.patch(f"{T}/{f}", json={"description": "x"}).status_code == 403
    perms = c_alice.get(f"{T}/{f}/permissions").json()["permissions"]
    assert perms[0] == {"name": f"tunedModels/{f}/permissions/owner", "granteeType": "USER",
                        "emailAddress": "alice@example.com", "role": "OWNER"}
    assert {p["role"] for p in perms} == {"OWNER", "READER", "WRITER"}
    for body in ({"granteeType": "USER", "emailAddress": "nobody", "role": "READER"},
                 {"granteeType": "USER", "emailAddress": "bob", "role": "OWNER"},
                 {"granteeType": "EVERYONE", "role": "WRITER"}):
        assert c_alice.post(f"{T}/{f}/permissions", json=body).status_code == 400
    # transfer: bob owns it, alice stays as writer
    assert c_alice.post(f"{T}/{f}:transferOwnership",
                        json={"emailAddress": "bob@example.com"}).status_code == 200
    assert f"tunedModels/{f}" in names(c_bob, "owner:me")
    assert f"tunedModels/{f}" in names(c_alice, "writers:me")
    assert c_alice.delete(f"{T}/{f}").status_code == 403
    assert c_bob.delete(f"{T}/{f}").status_code == 200
    for c in (c_alice, c_rita, c_bob):
        c.close()


def test_limits(world):
    acc = world.acc
    _, pw = acc.add_user("limited")
    acc.set_limits("limited", 1, 2)
    tok = world.svc.oauth_token(username="limited", password=pw, scope="tuning")
    with world.svc.client(tok) as c:
        first = c.post(T, json=create_body(n=40, epochs=50)).json()
        r = c.post(T, json=create_body(epochs=1))
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["status"] == "RESOURCE_EXHAUSTED" and "max_concurrent_jobs" in err["message"]
        c.post(f"/v1beta/{first['name']}:cancel")
        wait_op(c, first["name"])
        op = c.post(T, json=create_body(epochs=1)).json()
        wait_op(c, op["name"])
        r = c.post(T, json=create_body(epochs=1))
        assert r.status_code == 429 and "max_tuned_models" in r.json()["error"]["message"]


def test_disabled_user_is_locked_out(world):
    acc = world.acc
    _, pw = acc.add_user("leaver")
    _, key = acc.create_key("leaver")
    tok = world.svc.oauth_token(username="leaver", password=pw)
    acc.set_disabled("leaver")
    assert httpx.get(world.svc.url + T, headers={"x-goog-api-key": key}).status_code == 400
    assert httpx.get(world.svc.url + T,
                     headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def _cli(service, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tunelab.cli", *args], env=service.env,
                          capture_output=True, text=True, timeout=120, input=stdin)


def test_owner_credentials_file(service):
    path = service.home / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert creds["user"] == "owner" and creds["api_key"].startswith("tlk_")
    assert str(path) in service.read_log()


def test_users_and_keys_cli(service):
    r = _cli(service, "users", "add", "carol", "--email", "carol@example.com")
    assert r.returncode == 0 and "One-time password" in r.stdout, r.stderr
    pw = r.stdout.split("(shown once): ")[1].split()[0]
    assert service.oauth_token(username="carol", password=pw)
    r = _cli(service, "users", "add", "dave", "--password-stdin", stdin="correct horse\n")
    assert r.returncode == 0 and "One-time" not in r.stdout
    assert service.oauth_token(username="dave", password="correct horse")
    assert _cli(service, "users", "add", "dave").returncode == 2
    listed = _cli(service, "users", "list").stdout
    assert "carol" in listed and "dave" in listed and "owner" in listed
    assert pw not in listed
    r = _cli(service, "keys", "create", "--user", "carol", "--name", "ci")
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("tlk_")
    ok = httpx.get(service.url + "/v1beta/models", headers={"x-goog-api-key": key})
    assert ok.status_code == 200
    listed = _cli(service, "keys", "list", "--user", "carol").stdout
    assert key not in listed and key[-4:] in listed
    key_id = [ln.split()[1] for ln in listed.splitlines() if "carol" in ln][0]
    assert _cli(service, "keys", "revoke", key_id).returncode == 0
    bad = httpx.get(service.url + "/v1beta/models", headers={"x-goog-api-key": key})
    assert bad.status_code == 400
    r = _cli(service, "users", "add", "ci-bot", "--service", "--scope", "tuning")
    assert "client_secret: tls_" in r.stdout
    r = _cli(service, "users", "disable", "carol")
    assert r.returncode == 0
    r = _cli(service, "login", "--server", service.url, "dave", "--password-stdin",
             stdin="correct horse\n")
    assert r.returncode == 0 and "Signed in" in r.stdout, r.stderr
    r = _cli(service, "jobs", "--server", service.url)
    assert r.returncode == 0, r.stderr
    (service.home / "login.json").unlink()


def test_no_secret_leaks(service, world):
    secrets = [world.key, world.revoked_key, *world.tokens.values(), *world.pw.values(),
               service.api_key, service.token, service.creds["refresh_token"],
               service.creds["password"]]
    # error messages never echo a credential
    for h in ({"x-goog-api-key": world.key + "x"}, {"Authorization": "Bearer tla_" + "y" * 40}):
        r = httpx.get(service.url + T, headers=h)
        assert (world.key + "x") not in r.text and "y" * 40 not in r.text
    spec = httpx.get(service.url + "/openapi.json").text
    db = b"".join(p.read_bytes() for p in service.home.glob("tunelab.db*"))
    log = (service.home / f"serve-{service.port}.log").read_text(errors="replace")
    for s in secrets:
        assert s not in spec
        assert s.encode() not in db
        assert s not in log
