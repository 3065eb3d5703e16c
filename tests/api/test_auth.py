"""Bearer tokens: the administrator's, and tenants' tokens scoped to their own tenant."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dpu_emu.domain.auth import ADMIN_TOKEN_ENV, hash_token, load_admin_token

from .conftest import ADMIN_TOKEN, HOSTNQN_A, HOSTNQN_B, SUBNQN, ApiDevice

OTHER_NQN = "nqn.2026-11.io.dpu-emu:other"
MIB = 1 << 20


def setup_two_tenants(api: ApiDevice) -> tuple[str, str]:
    for nqn in (SUBNQN, OTHER_NQN):
        api.client.post("/v1/subsystems", json={"nqn": nqn, "allow_any_host": True})
        api.client.post(f"/v1/subsystems/{nqn}/namespaces", json={"size_bytes": MIB})
        api.client.post(f"/v1/subsystems/{nqn}/namespaces", json={"size_bytes": MIB})
    blue = api.client.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A],
                                                "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]}).json()["token"]
    red = api.client.post("/v1/tenants", json={"name": "red", "hosts": [HOSTNQN_B],
                                               "namespaces": [{"subsystem": OTHER_NQN, "nsid": 2}]}).json()["token"]
    return blue, red


def test_missing_or_wrong_token_is_401(api: ApiDevice) -> None:
    for token in (None, "wrong-token-of-some-length", ADMIN_TOKEN + "x"):
        with api.client_with(token) as client:
            for path in ("/v1/subsystems", "/v1/stats", "/metrics", "/v1/tenants/blue", "/v1/config"):
                resp = client.get(path)
                assert resp.status_code == 401, (token, path)
                assert resp.headers["www-authenticate"] == "Bearer"
    with api.client_with(None) as client:
        assert client.get("/v1/subsystems", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}).status_code == 401


def test_tenant_sees_only_its_own(api: ApiDevice) -> None:
    blue, _ = setup_two_tenants(api)
    with api.client_with(blue) as client:
        assert [t["name"] for t in client.get("/v1/tenants").json()] == ["blue"]
        assert client.get("/v1/tenants/blue").status_code == 200
        missing = client.get("/v1/tenants/nosuch")
        other = client.get("/v1/tenants/red")
        # out of scope looks exactly like absent: same status, same body apart from the path
        assert other.status_code == missing.status_code == 404
        assert other.json()["detail"].replace("red", "X") == missing.json()["detail"].replace("nosuch", "X")
        assert [s["nqn"] for s in client.get("/v1/subsystems").json()] == [SUBNQN]
        sub = client.get(f"/v1/subsystems/{SUBNQN}").json()
        assert sub["namespaces"] == [1] and sub["hosts"] == []
        assert [n["nsid"] for n in client.get(f"/v1/subsystems/{SUBNQN}/namespaces").json()] == [1]
        assert client.get(f"/v1/subsystems/{SUBNQN}/namespaces/1").status_code == 200
        assert client.get(f"/v1/subsystems/{SUBNQN}/namespaces/2").status_code == 404
        assert client.get(f"/v1/subsystems/{OTHER_NQN}").status_code == 404
        assert client.get(f"/v1/subsystems/{OTHER_NQN}/namespaces/2").status_code == 404
        stats = client.get("/v1/stats").json()
        assert [(n["subsystem"], n["nsid"]) for n in stats["namespaces"]] == [(SUBNQN, 1)]
        assert OTHER_NQN not in client.get("/metrics").text


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/subsystems", {"nqn": "nqn.2026-11.io.x:y"}),
    ("DELETE", f"/v1/subsystems/{SUBNQN}", None),
    ("PATCH", f"/v1/subsystems/{SUBNQN}", {"serial": "X"}),
    ("POST", f"/v1/subsystems/{SUBNQN}/namespaces", {"size_bytes": 4096}),
    ("DELETE", f"/v1/subsystems/{SUBNQN}/namespaces/1", None),
    ("GET", f"/v1/subsystems/{SUBNQN}/hosts", None),
    ("POST", f"/v1/subsystems/{SUBNQN}/hosts", {"nqn": "nqn.2026-11.io.x:h"}),
    ("GET", "/v1/listeners", None),
    ("POST", "/v1/tenants", {"name": "green"}),
    ("PATCH", "/v1/tenants/blue", {"qos": "gold"}),
    ("DELETE", "/v1/tenants/blue", None),
    ("POST", "/v1/tenants/blue/token", None),
    ("GET", "/v1/config", None),
])
def test_tenant_token_cannot_administer(api: ApiDevice, method: str, path: str, body: object) -> None:
    blue, _ = setup_two_tenants(api)
    with api.client_with(blue) as client:
        resp = client.request(method, path, json=body)
        assert resp.status_code == 403, resp.text
    assert api.client.get("/v1/tenants/blue").status_code == 200  # nothing changed


def test_secrets_never_stored_or_returned(api: ApiDevice, tmp_path: Path) -> None:
    blue, red = setup_two_tenants(api)
    saved = (tmp_path / "device.json").read_text()
    exported = api.client.get("/v1/config").text
    assert exported == saved
    for secret in (blue, red, ADMIN_TOKEN):
        assert secret not in saved
    assert hash_token(blue) in saved
    for path in ("/v1/tenants", "/v1/tenants/blue", "/v1/subsystems", "/v1/stats"):
        assert blue not in api.client.get(path).text
    rotated = api.client.post("/v1/tenants/blue/token").json()["token"]
    with api.client_with(blue) as client:
        assert client.get("/v1/tenants/blue").status_code == 401  # the old token is gone
    with api.client_with(rotated) as client:
        assert client.get("/v1/tenants/blue").status_code == 200


def test_admin_token_file_generated_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "admin-token"
    first = load_admin_token(path, environ={})
    assert first.generated and first.source == "generated"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_admin_token(path, environ={})
    assert again.generated is None and again.digest == first.digest
    from_env = load_admin_token(path, environ={ADMIN_TOKEN_ENV: "an-environment-token"})
    assert from_env.digest == hash_token("an-environment-token")
    with pytest.raises(ValueError):
        load_admin_token(path, environ={ADMIN_TOKEN_ENV: "short"})
