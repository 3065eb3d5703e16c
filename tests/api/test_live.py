"""Changes made over REST reach connected hosts (nvmeof.host on real sockets): the
Namespace Attribute Changed event, disconnection when access is revoked, Connect
refusals, per-host namespace masking, controller listing/deletion and I/O statistics."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from nvmeof.errors import NvmeStatus
from nvmeof.host import HostController, connect
from nvmeof.wire.constants import (
    AEC_NS_ATTRIBUTE,
    AdminOpcode,
    AsyncEventNotice,
    AsyncEventType,
    FeatureId,
    LogPage,
    StatusCodeType,
)

from .conftest import HOSTNQN_A, HOSTNQN_B, LOOPBACK, SUBNQN, ApiDevice, run

MIB = 1 << 20
CONNECT_INVALID_HOST = 0x84
AER_TIMEOUT_S = 10.0
CHANGED_NS_LIST_BYTES = 4096
BLOCK = 512


def provision(api: ApiDevice, *, namespaces: int = 1, allow_any_host: bool = False,
              hosts: tuple[str, ...] = (HOSTNQN_A,)) -> None:
    resp = api.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": allow_any_host,
                                                   "hosts": list(hosts)})
    assert resp.status_code == 201, resp.text
    for _ in range(namespaces):
        assert api.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"size_bytes": MIB}).status_code == 201


async def rest(api: ApiDevice, method: str, path: str, **kw: Any) -> Any:
    """An HTTP call from a worker thread, so the host's event loop keeps running."""
    return await asyncio.to_thread(api.client.request, method, path, **kw)


async def host(api: ApiDevice, hostnqn: str) -> HostController:
    return await connect(LOOPBACK, api.io_port, SUBNQN, hostnqn=hostnqn)


def test_namespace_added_over_rest_raises_aen(api: ApiDevice) -> None:
    provision(api)

    async def body() -> None:
        ctrl = await host(api, HOSTNQN_A)
        try:
            await ctrl.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_NS_ATTRIBUTE)
            aer = asyncio.create_task(ctrl.admin_raw(AdminOpcode.ASYNC_EVENT_REQUEST, timeout=AER_TIMEOUT_S))
            await asyncio.sleep(0.05)
            assert not aer.done()
            resp = await rest(api, "POST", f"/v1/subsystems/{SUBNQN}/namespaces", json={"nsid": 7, "size_bytes": MIB})
            assert resp.status_code == 201, resp.text
            completion = await aer
            assert completion.dw0 & 0x7 == AsyncEventType.NOTICE
            assert (completion.dw0 >> 8) & 0xFF == AsyncEventNotice.NAMESPACE_ATTRIBUTE_CHANGED
            assert (completion.dw0 >> 16) & 0xFF == LogPage.CHANGED_NS_LIST
            page = await ctrl.get_log_page(LogPage.CHANGED_NS_LIST, CHANGED_NS_LIST_BYTES)
            assert struct.unpack_from("<I", page)[0] == 7
            assert await ctrl.active_namespaces() == [1, 7]
        finally:
            await ctrl.close()

    run(body())


def test_removing_host_access_disconnects_its_controllers(api: ApiDevice) -> None:
    provision(api, hosts=(HOSTNQN_A, HOSTNQN_B))

    async def body() -> None:
        a, b = await host(api, HOSTNQN_A), await host(api, HOSTNQN_B)
        try:
            listed = (await rest(api, "GET", "/v1/controllers")).json()
            assert sorted(c["hostnqn"] for c in listed) == sorted([HOSTNQN_A, HOSTNQN_B])
            assert all(c["io_queues"] == 1 and c["queues"] == [0, 1] for c in listed)
            resp = await rest(api, "DELETE", f"/v1/subsystems/{SUBNQN}/hosts/{HOSTNQN_A}")
            assert resp.status_code == 204
            with pytest.raises((ConnectionError, NvmeStatus, TimeoutError)):
                await a.read(1, 0, 1)
            await b.read(1, 0, 1)  # the other host is untouched
            listed = (await rest(api, "GET", "/v1/controllers")).json()
            assert [c["hostnqn"] for c in listed] == [HOSTNQN_B]
            with pytest.raises(NvmeStatus) as info:
                await host(api, HOSTNQN_A)
            assert (info.value.sct, info.value.sc) == (StatusCodeType.COMMAND_SPECIFIC, CONNECT_INVALID_HOST)
        finally:
            await a.close()
            await b.close()

    run(body())


def test_connect_from_host_not_allowed_is_refused(api: ApiDevice) -> None:
    provision(api, hosts=(HOSTNQN_A,))

    async def body() -> None:
        with pytest.raises(NvmeStatus) as info:
            await host(api, HOSTNQN_B)
        assert info.value.sct == StatusCodeType.COMMAND_SPECIFIC and info.value.sc == CONNECT_INVALID_HOST

    run(body())


def test_tenant_masks_namespaces_per_host(api: ApiDevice) -> None:
    provision(api, namespaces=3, allow_any_host=True)
    resp = api.client.post("/v1/tenants", json={"name": "blue", "hosts": [HOSTNQN_A],
                                                "namespaces": [{"subsystem": SUBNQN, "nsid": 2}]})
    assert resp.status_code == 201

    async def body() -> None:
        a, b = await host(api, HOSTNQN_A), await host(api, HOSTNQN_B)
        try:
            assert await a.active_namespaces() == [2]
            assert await b.active_namespaces() == [1, 2, 3]
            with pytest.raises(NvmeStatus):
                await a.read(1, 0, 1)  # invisible: Invalid Namespace
            await a.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_NS_ATTRIBUTE)
            aer = asyncio.create_task(a.admin_raw(AdminOpcode.ASYNC_EVENT_REQUEST, timeout=AER_TIMEOUT_S))
            await asyncio.sleep(0.05)
            grant = [{"subsystem": SUBNQN, "nsid": 2}, {"subsystem": SUBNQN, "nsid": 3}]
            assert (await rest(api, "PATCH", "/v1/tenants/blue", json={"namespaces": grant})).status_code == 200
            assert ((await aer).dw0 >> 16) & 0xFF == LogPage.CHANGED_NS_LIST
            assert await a.active_namespaces() == [2, 3]
            # no grant left in this subsystem: the tenant's host loses it altogether
            assert (await rest(api, "PATCH", "/v1/tenants/blue", json={"namespaces": []})).status_code == 200
            with pytest.raises((ConnectionError, NvmeStatus, TimeoutError)):
                await a.read(2, 0, 1)
            with pytest.raises(NvmeStatus) as info:
                await host(api, HOSTNQN_A)
            assert info.value.sc == CONNECT_INVALID_HOST
            assert await b.active_namespaces() == [1, 2, 3]
        finally:
            await a.close()
            await b.close()

    run(body())


def test_delete_controller_disconnects_and_stats_count_io(api: ApiDevice) -> None:
    provision(api)

    async def body() -> None:
        a = await host(api, HOSTNQN_A)
        try:
            await a.write(1, 0, b"\xab" * (8 * BLOCK))
            assert await a.read(1, 0, 8) == b"\xab" * (8 * BLOCK)
            stats = (await rest(api, "GET", "/v1/stats")).json()
            ns = next(n for n in stats["namespaces"] if n["subsystem"] == SUBNQN and n["nsid"] == 1)
            assert ns["write"]["ops"] == 1 and ns["write"]["bytes"] == 8 * BLOCK
            assert ns["read"]["ops"] == 1 and ns["read"]["bytes"] == 8 * BLOCK and ns["errors"] == 0
            assert ns["read"]["latency_us"]["p50"] >= 1
            ctrl_stats = stats["controllers"][0]
            assert (ctrl_stats["read_ops"], ctrl_stats["write_ops"]) == (1, 1)
            assert ctrl_stats["bytes_written"] == 8 * BLOCK and ctrl_stats["hostnqn"] == HOSTNQN_A
            text = (await rest(api, "GET", "/metrics")).text
            assert f'dpu_emu_namespace_bytes_total{{subsystem="{SUBNQN}",nsid="1",direction="write"}} 4096' in text
            assert "dpu_emu_namespace_latency_seconds_bucket" in text
            controllers = (await rest(api, "GET", "/v1/controllers", params={"subsystem": SUBNQN})).json()
            assert len(controllers) == 1
            cid = controllers[0]["id"]
            assert (await rest(api, "GET", f"/v1/controllers/{cid}")).json()["cntlid"] == a.cntlid
            assert (await rest(api, "DELETE", f"/v1/controllers/{cid}")).status_code == 204
            with pytest.raises((ConnectionError, NvmeStatus, TimeoutError)):
                await a.read(1, 0, 1)
            assert (await rest(api, "GET", "/v1/controllers")).json() == []
        finally:
            await a.close()

    run(body())
