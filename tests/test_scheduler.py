"""Admission to backends: cap per backend, FIFO, fair share per requester, eligibility, load."""

from __future__ import annotations

import asyncio

import pytest

from comfykube.controller.discovery import backend_urls
from comfykube.controller.scheduler import Scheduler


async def hold(scheduler: Scheduler, key: str, order: list[str], release: asyncio.Event, **kw: object) -> str:
    async with scheduler.slot(key, **kw) as backend:  # type: ignore[arg-type]
        order.append(key)
        await release.wait()
        return backend


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_cap_limits_jobs_in_flight_per_backend() -> None:
    scheduler = Scheduler(["a"], cap=2)
    order: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(scheduler, f"j{i}", order, release, created=float(i))) for i in range(5)]
    await settle()
    assert order == ["j0", "j1"]
    assert scheduler.position("j2") == 0 and scheduler.position("j4") == 2
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["j0", "j1", "j2", "j3", "j4"]  # FIFO by creation time


async def test_a_requester_with_fewer_jobs_in_flight_goes_first() -> None:
    scheduler = Scheduler(["a"], cap=1)
    order: list[str] = []
    gates = {key: asyncio.Event() for key in ("alice-1", "alice-2", "alice-3", "bob-1")}
    tasks = []
    for created, key in enumerate(["alice-1", "alice-2", "alice-3", "bob-1"]):
        requester = key.split("-")[0]
        tasks.append(asyncio.create_task(
            hold(scheduler, key, order, gates[key], requester=requester, created=float(created))))
        await settle()
    gates["alice-1"].set()
    await settle()
    # Bob came last, but Alice already had a job through: Bob's first job goes before Alice's second.
    assert order == ["alice-1", "bob-1"]
    for gate in gates.values():
        gate.set()
    await asyncio.gather(*tasks)
    assert order == ["alice-1", "bob-1", "alice-2", "alice-3"]


async def test_jobs_go_to_the_backend_with_the_shortest_expected_wait() -> None:
    scheduler = Scheduler(["a", "b"], cap=4)
    scheduler.load = lambda backend: {"a": 3.0, "b": 0.0}[backend]  # someone else queued 3 prompts on a
    order: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(scheduler, f"j{i}", order, release)) for i in range(4)]
    await settle()
    assert scheduler.inflight == {"a": 1, "b": 3}
    release.set()
    await asyncio.gather(*tasks)


async def test_unhealthy_backend_is_drained_and_restored() -> None:
    scheduler = Scheduler(["a", "b"], cap=1)
    scheduler.mark("a", healthy=False)
    order: list[str] = []
    release = asyncio.Event()
    first = asyncio.create_task(hold(scheduler, "j0", order, release))
    second = asyncio.create_task(hold(scheduler, "j1", order, release))
    await settle()
    assert order == ["j0"] and scheduler.inflight["a"] == 0
    scheduler.mark("a", healthy=True)
    await settle()
    assert order == ["j0", "j1"]
    release.set()
    assert sorted(await asyncio.gather(first, second)) == ["a", "b"]


async def test_only_eligible_backends_are_used() -> None:
    scheduler = Scheduler(["a", "b"], cap=4)
    order: list[str] = []
    release = asyncio.Event()
    release.set()
    backend = await hold(scheduler, "j0", order, release, eligible=lambda b: b == "b")
    assert backend == "b"


async def test_cancelled_waiter_leaves_the_queue_and_frees_nothing_it_did_not_hold() -> None:
    scheduler = Scheduler(["a"], cap=1)
    order: list[str] = []
    release = asyncio.Event()
    holder = asyncio.create_task(hold(scheduler, "j0", order, release))
    waiter = asyncio.create_task(hold(scheduler, "j1", order, release))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert scheduler.waiters == [] and scheduler.inflight["a"] == 1
    release.set()
    await holder
    assert scheduler.inflight["a"] == 0 and scheduler.by_requester == {}


async def test_backends_can_change_at_run_time() -> None:
    scheduler = Scheduler([], cap=1)
    assert not scheduler.has_room()
    order: list[str] = []
    release = asyncio.Event()
    task = asyncio.create_task(hold(scheduler, "j0", order, release))
    await settle()
    assert order == []
    scheduler.set_backends(["new"])
    await settle()
    assert order == ["j0"]
    release.set()
    assert await task == "new"


def test_backend_urls_from_endpoint_slices_use_ready_endpoints_and_the_http_port() -> None:
    slices = [
        {"ports": [{"name": "metrics", "port": 9100}, {"name": "http", "port": 8188}],
         "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                       {"addresses": ["10.0.0.3"], "conditions": {"ready": False}}]},
        {"ports": [{"port": 8190}], "endpoints": [{"addresses": ["fd00::5"]}]},
        {"endpoints": [{"addresses": ["10.0.0.9"]}]},
    ]
    assert backend_urls(slices) == ["http://10.0.0.2:8188", "http://10.0.0.9:8188", "http://[fd00::5]:8190"]


async def test_hand_off_frees_the_slot_before_the_block_ends() -> None:
    # A job whose prompt finished in ComfyUI gives its slot on while it stores its images,
    # so the next prompt is queued in ComfyUI meanwhile; the block's end does not free it twice.
    scheduler = Scheduler(["a"], cap=1)
    order: list[str] = []
    release = asyncio.Event()
    first_stored = asyncio.Event()

    async def first() -> None:
        async with scheduler.slot("j0", created=0.0):
            order.append("j0")
            scheduler.hand_off("j0")
            await first_stored.wait()

    one = asyncio.create_task(first())
    two = asyncio.create_task(hold(scheduler, "j1", order, release, created=1.0))
    three = asyncio.create_task(hold(scheduler, "j2", order, release, created=2.0))
    await settle()
    assert order == ["j0", "j1"]  # j1 started while j0 still holds its block
    first_stored.set()
    await one
    await settle()
    assert order == ["j0", "j1"] and scheduler.inflight["a"] == 1  # j0's end freed nothing more
    release.set()
    await asyncio.gather(two, three)
    assert order == ["j0", "j1", "j2"] and scheduler.inflight["a"] == 0


async def test_thousands_of_waiters_cost_no_scan_when_no_backend_has_room() -> None:
    scheduler = Scheduler(["a", "b"], cap=1)
    release = asyncio.Event()
    order: list[str] = []
    tasks = [asyncio.create_task(hold(scheduler, f"j{i}", order, release, created=float(i),
                                      requester=f"u{i % 7}")) for i in range(3000)]
    await settle()
    calls = 0

    def counting(backend: str) -> bool:
        nonlocal calls
        calls += 1
        return True

    for waiter in scheduler.waiters:
        waiter.eligible = counting
    scheduler.mark("a", True)  # a dispatch with both backends full
    assert calls == 0
    release.set()
    await asyncio.gather(*tasks)
    assert len(order) == 3000 and scheduler.inflight == {"a": 0, "b": 0}
