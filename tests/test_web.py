"""The gallery over HTTP, against the Kubernetes API stand-in and nanio.

List, filters, paging, the job page (images, spec, seed, Events, copy as YAML), escaping,
live updates over SSE (coalesced), authentication refusals, headers, and the read-only
promise (the server never sends a write to the cluster).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import yaml

from comfykube.types import ImageJobSpec
from comfykube_web.index import Filters, JobIndex
from comfykube_web.jobs import JobView, lenient
from comfykube_web.settings import WebSettings
from tests.web_support import EVENTS, NAMESPACES, add_job, serve_gallery, set_status, stored_image, succeeded

XSS = "<img src=x onerror=alert(1)>"


async def get(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url, **kwargs)


def cards_in(html: str) -> list[str]:
    return re.findall(r'<article class="card[^"]*" data-key="([^"]+)"', html)


# --------------------------------------------------------------------------- list, filters, paging


async def test_grid_lists_jobs_newest_first_with_thumbnails(
    kube_api_inprocess: Any, s3_settings: Any, tmp_path: Path
) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings) as gallery:
        image = await stored_image(gallery.store, "default/older/u1/0.png", tmp=tmp_path)
        add_job(fake, "older", status=succeeded([image]))
        await asyncio.sleep(1.05)  # creationTimestamp has one-second resolution
        add_job(fake, "newer", prompt="a blue heron", status={"phase": "Running", "progress": {"value": 2, "max": 4}})
        await gallery.synced(2)
        response = await get(gallery.url + "/")
        assert response.status_code == 200
        html = response.text
        assert cards_in(html) == ["default/newer", "default/older"]
        # The thumbnail (not the original) is shown, through a presigned URL that works.
        [thumb] = re.findall(r'<img data-field="thumb"[^>]* src="([^"]+)"', html)
        thumb = thumb.replace("&amp;", "&")
        assert "/default/older/u1/0.thumb.jpg?" in thumb and "X-Amz-Signature=" in thumb
        fetched = await get(thumb)
        assert fetched.status_code == 200 and fetched.content[:3] == b"\xff\xd8\xff"
        assert 'value="50"' in html  # the running job's bar: 2 of 4 steps
        assert "a blue heron" in html and "kubectl" in html


async def test_old_jobs_without_a_thumbnail_show_the_original(
    kube_api_inprocess: Any, s3_settings: Any, tmp_path: Path
) -> None:
    async with serve_gallery(kube_api_inprocess, s3_settings) as gallery:
        image = await stored_image(gallery.store, "default/legacy/u1/0.png", thumbnail=False, tmp=tmp_path)
        add_job(kube_api_inprocess, "legacy", status=succeeded([image]))
        await gallery.synced(1)
        html = (await get(gallery.url + "/")).text
        [thumb] = re.findall(r'<img data-field="thumb"[^>]* src="([^"]+)"', html)
        assert "/default/legacy/u1/0.png?" in thumb


async def test_filters_phase_requester_workflow_namespace_and_search(
    kube_api_inprocess: Any, s3_settings: Any
) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings, namespaces=["default", "team"]) as gallery:
        add_job(fake, "fox", prompt="A Red Fox in the snow", status={"phase": "Running"})
        add_job(fake, "cat", prompt="a cat", labels={"comfykube.dev/requester": "123456789012345678"},
                status={"phase": "Failed", "reason": "PreflightFailed", "message": "no such sampler"})
        add_job(fake, "owl", namespace="team", prompt="an owl", workflow="t2i_other", status={"phase": "Queued"})
        await gallery.synced(3)

        async def keys(**query: str) -> set[str]:
            response = await get(gallery.url + "/api/jobs", params=query)
            assert response.status_code == 200
            return {job["key"] for job in response.json()["jobs"]}

        assert await keys() == {"default/fox", "default/cat", "team/owl"}
        assert await keys(phase="Failed") == {"default/cat"}
        assert await keys(requester="discord:123456789012345678") == {"default/cat"}
        assert await keys(requester="kubectl") == {"default/fox", "team/owl"}
        assert await keys(workflow="t2i_other") == {"team/owl"}
        assert await keys(namespace="team") == {"team/owl"}
        assert await keys(q="red fox") == {"default/fox"}  # case-insensitive
        assert await keys(q="fox", phase="Failed") == set()
        assert await keys(phase="NoSuchPhase") == set()
        # The HTML grid applies them too, and the menus offer what exists.
        html = (await get(gallery.url + "/", params={"namespace": "team"})).text
        assert cards_in(html) == ["team/owl"]
        assert '<option value="discord:123456789012345678"' in html and ">Discord user 123456789012345678<" in html
        assert '<option value="t2i_other"' in html


async def test_paging_walks_every_job_once_newest_first(kube_api_inprocess: Any, s3_settings: Any) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings, page_size=7) as gallery:
        for n in range(30):
            add_job(fake, f"job-{n:02d}")
        await gallery.synced(30)
        seen: list[str] = []
        url: str | None = "/"
        pages = 0
        while url:
            html = (await get(gallery.url + url.replace("&amp;", "&"))).text
            keys = cards_in(html)
            assert len(keys) <= 7
            seen += keys
            found = re.search(r'<a href="([^"]+)" id="older">', html)
            url = found.group(1) if found else None
            pages += 1
        assert pages == 5 and len(seen) == 30 and len(set(seen)) == 30
        created = [gallery.parts.index.get(k).created for k in seen]  # type: ignore[union-attr]
        assert created == sorted(created, reverse=True)


def test_index_paging_and_changes_stay_consistent() -> None:
    index = JobIndex()
    base = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    def job(n: int, phase: str = "Running") -> JobView:
        return JobView.from_obj({
            "metadata": {"name": f"j{n}", "namespace": "ns", "uid": f"u{n}", "resourceVersion": str(n),
                         "creationTimestamp": (base + dt.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"prompt": f"prompt {n}"}, "status": {"phase": phase},
        })

    for n in range(2000):
        index.upsert(job(n))
    page = index.page(Filters(), limit=48)
    assert [j.name for j in page.jobs[:2]] == ["j1999", "j1998"] and len(page.jobs) == 48
    seq = index.seq
    for _ in range(50):  # many updates of one job coalesce into one change
        index.upsert(job(5, "Succeeded"))
    index.remove("ns/j7")
    _, changes, reset = index.changes_since(seq)
    assert not reset and [(k, j is None) for k, j in changes] == [("ns/j5", False), ("ns/j7", True)]
    assert index.page(Filters(phase="Succeeded"), limit=10).jobs[0].name == "j5"
    assert len(index) == 1999


# --------------------------------------------------------------------------- the job page


async def test_job_page_shows_images_spec_seed_events_and_a_manifest_to_render_it_again(
    kube_api_inprocess: Any, s3_settings: Any, tmp_path: Path
) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings) as gallery:
        images = [await stored_image(gallery.store, f"default/fox/u1/{i}.png", size=(320, 200), tmp=tmp_path)
                  for i in range(2)]
        obj = add_job(fake, "fox", steps=4, batchSize=2, sampler="euler_ancestral", status=succeeded(images, seed=777))
        seconds = {"Queued": 1, "Running": 2, "Uploading": 7, "Succeeded": 9}
        for reason in seconds:
            fake.create_object(EVENTS, {
                "metadata": {"generateName": "fox.", "namespace": "default"},
                "involvedObject": {"kind": "ImageJob", "name": "fox", "namespace": "default",
                                   "uid": obj["metadata"]["uid"]},
                "type": "Normal", "reason": reason, "message": f"job is {reason.lower()}",
                "lastTimestamp": f"2026-12-01T10:00:0{seconds[reason]}Z",
            })
        # An Event of another object with the same name but another uid stays out.
        fake.create_object(EVENTS, {
            "metadata": {"generateName": "fox.", "namespace": "default"},
            "involvedObject": {"kind": "ImageJob", "name": "fox", "namespace": "default", "uid": "someone-else"},
            "type": "Warning", "reason": "Stale", "message": "from a deleted job",
        })
        await gallery.synced(1)
        response = await get(gallery.url + "/jobs/default/fox")
        assert response.status_code == 200
        html = response.text
        full = [u.replace("&amp;", "&") for u in re.findall(r'<img class="full" src="([^"]+)"', html)]
        assert len(full) == 2
        for url, image in zip(full, images, strict=True):
            assert f"/default/fox/u1/{image['key'].rsplit('/', 1)[1]}?" in url  # full size, not the thumbnail
            fetched = await get(url)
            assert fetched.status_code == 200 and len(fetched.content) == image["bytes"]
        assert "777" in html and "euler_ancestral" in html and "http://comfyui:8188" in html
        for reason in ("Queued", "Running", "Uploading", "Succeeded"):
            assert f"job is {reason.lower()}" in html
        assert "from a deleted job" not in html
        assert "rendering</th><td>5.0 s" in html  # Running 10:00:02 → Uploading 10:00:07
        manifest_text = re.search(r'<pre id="manifest">(.*?)</pre>', html, re.S).group(1)  # type: ignore[union-attr]
        manifest = yaml.safe_load(manifest_text.replace("&#39;", "'").replace("&quot;", '"').replace("&amp;", "&"))
        assert "status" not in manifest and manifest["kind"] == "ImageJob"
        spec = ImageJobSpec.model_validate(manifest["spec"])
        assert spec.seed == 777 and spec.batch_size == 2 and spec.sampler == "euler_ancestral"
        assert manifest["metadata"]["generateName"] == "fox-"
        # The JSON view reads status through the types.
        body = (await get(gallery.url + "/api/jobs/default/fox")).json()
        assert body["status"]["seed"] == 777 and body["status"]["images"][0]["thumbnailKey"].endswith(".thumb.jpg")


async def test_failed_job_shows_reason_and_message(kube_api_inprocess: Any, s3_settings: Any) -> None:
    async with serve_gallery(kube_api_inprocess, s3_settings) as gallery:
        add_job(kube_api_inprocess, "bad", status={
            "phase": "Failed", "reason": "PreflightFailed",
            "message": "sampler 'euler_a' is not offered; choose one of: euler, euler_ancestral"})
        await gallery.synced(1)
        html = (await get(gallery.url + "/jobs/default/bad")).text
        assert '<div class="failure" role="alert"><strong>PreflightFailed</strong>' in html
        assert "choose one of: euler, euler_ancestral" in html
        grid = (await get(gallery.url + "/")).text
        assert "PreflightFailed: sampler" in grid


async def test_unknown_job_and_unconfigured_namespace_are_404(kube_api_inprocess: Any, s3_settings: Any) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings, namespaces=["default"]) as gallery:
        fake.create_object(NAMESPACES, {"metadata": {"name": "secret-team"}})
        add_job(fake, "hidden", namespace="secret-team")
        add_job(fake, "shown")
        await gallery.synced(1)
        assert (await get(gallery.url + "/jobs/secret-team/hidden")).status_code == 404
        assert (await get(gallery.url + "/jobs/default/nope")).status_code == 404
        assert cards_in((await get(gallery.url + "/")).text) == ["default/shown"]
        assert (await get(gallery.url + "/api/jobs", params={"namespace": "secret-team"})).json()["jobs"] == []


async def test_unknown_and_broken_status_fields_do_not_break_the_view(
    kube_api_inprocess: Any, s3_settings: Any
) -> None:
    status = {"phase": "Running", "progress": {"value": 3, "max": 6}, "fromTheFuture": {"x": 1},
              "seed": "not-a-number", "images": [{"key": "k", "bytes": 0}], "checkpointUsed": "sd15.safetensors"}
    view = JobView.from_obj({"metadata": {"name": "a", "namespace": "default"}, "spec": {"prompt": "x"},
                             "status": status})
    assert view.phase.value == "Running" and view.percent == 50
    assert view.status.seed is None and view.status.images == []
    assert lenient(ImageJobSpec, {"prompt": "x", "newField": 1, "width": 513}).width == 512  # bad → default
    async with serve_gallery(kube_api_inprocess, s3_settings) as gallery:
        obj = add_job(kube_api_inprocess, "odd")
        gallery.parts.feed.apply("MODIFIED", {**obj, "status": status, "spec": {"prompt": "   "}})
        assert (await get(gallery.url + "/")).status_code == 200
        page = await get(gallery.url + "/jobs/default/odd")
        assert page.status_code == 200 and "does not validate" in page.text


# --------------------------------------------------------------------------- escaping


async def test_a_prompt_with_markup_is_escaped_everywhere(kube_api_inprocess: Any, s3_settings: Any) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings) as gallery:
        add_job(fake, "xss", prompt=XSS + ' " onmouseover="alert(2)', negativePrompt="</pre><script>alert(3)</script>",
                status={"phase": "Failed", "reason": "ExecutionFailed", "message": "<b>boom</b>"})
        await gallery.synced(1)
        for path in ("/", "/jobs/default/xss", "/?q=%3Cimg"):
            html = (await get(gallery.url + path)).text
            assert "<img src=x" not in html and "onerror=alert(1)>" not in html.replace("&gt;", "")
            assert "&lt;img src=x onerror=alert(1)&gt;" in html, path
            assert '" onmouseover="' not in html and "<script>alert" not in html and "<b>boom" not in html
            assert "&#34; onmouseover=&#34;" in html or "&quot; onmouseover=&quot;" in html
            assert not re.search(r"<script(?! src=\"/static/gallery\.js\" defer></script>)", html), path
        # JSON is JSON: the prompt comes back verbatim, for textContent.
        body = (await get(gallery.url + "/api/jobs")).json()
        assert body["jobs"][0]["prompt"].startswith(XSS)


# --------------------------------------------------------------------------- live updates


async def read_events(
    url: str, seconds: float, headers: dict[str, str] | None = None, until: Any = None
) -> list[tuple[float, str, Any]]:
    """(arrival time, event name, data) of the SSE stream at `url` for `seconds` (or until `until(events)`)."""
    out: list[tuple[float, str, Any]] = []
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=None) as http:
        try:
            async with asyncio.timeout(seconds):
                async with http.stream("GET", url, headers=headers) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    name, data = "message", ""
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                        elif line == "" and data:
                            out.append((time.monotonic() - started, name, json.loads(data)))
                            name, data = "message", ""
                            if until is not None and until(out):
                                return out
        except TimeoutError:
            pass
    return out


async def test_live_updates_are_coalesced_and_filtered(kube_api_inprocess: Any, s3_settings: Any) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings, update_interval=0.5) as gallery:
        add_job(fake, "busy", status={"phase": "Running", "progress": {"value": 0, "max": 200}})
        add_job(fake, "other", status={"phase": "Queued"})
        await gallery.synced(2)
        since = gallery.parts.index.seq

        async def churn() -> None:
            for step in range(1, 201):  # 200 progress writes in about 2 s
                set_status(fake, "busy", {"progress": {"value": step, "max": 200}})
                await asyncio.sleep(0.01)
            set_status(fake, "other", {"phase": "Succeeded"})

        url = gallery.url + f"/api/stream?phase=Running&since={since}"
        writer = asyncio.create_task(churn())

        def finished(events: list[tuple[float, str, Any]]) -> bool:
            return any(job["key"] == "default/busy" and job["progress"]["value"] == 200
                       for _, _, data in events for job in data.get("jobs", []))

        events = await read_events(url, 30, until=finished)  # 2 s of writes; more on a loaded machine
        await writer
        batches = [data for _, name, data in events if name == "jobs"]
        assert batches, events
        times = [t for t, name, _ in events if name == "jobs"]
        duration = max(times[-1] - times[0], 0.001)
        assert (len(times) - 1) / duration <= 2.2, times  # at most ~2 per second
        assert len(batches) < 20  # 200 writes → a handful of messages
        for batch in batches:
            keys = [job["key"] for job in batch["jobs"]]
            assert len(keys) == len(set(keys))  # each job once per message
        last = [job for batch in batches for job in batch["jobs"] if job["key"] == "default/busy"][-1]
        assert last["progress"] == {"value": 200, "max": 200}
        # The other job never matched phase=Running: at most one "gone" marker, never its card.
        others = [job for batch in batches for job in batch["jobs"] if job["key"] == "default/other"]
        assert len(others) <= 1 and all(job.get("gone") for job in others)


async def test_a_new_job_arrives_on_the_stream(kube_api_inprocess: Any, s3_settings: Any, tmp_path: Path) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings) as gallery:
        await gallery.synced(0)
        since = gallery.parts.index.seq

        async def later() -> None:
            await asyncio.sleep(0.3)
            add_job(fake, "fresh", prompt="a fresh one")
            image = await stored_image(gallery.store, "default/fresh/u/0.png", tmp=tmp_path)
            set_status(fake, "fresh", succeeded([image]))

        task = asyncio.create_task(later())
        events = await read_events(gallery.url + f"/api/stream?since={since}", 2.0)
        await task
        cards = [job for _, name, data in events if name == "jobs" for job in data["jobs"]]
        assert cards[0]["key"] == "default/fresh" and cards[0]["prompt"] == "a fresh one"
        assert cards[-1]["phase"] == "Succeeded" and ".thumb.jpg?" in cards[-1]["thumb"]


async def test_stream_resumes_from_last_event_id(kube_api_inprocess: Any, s3_settings: Any) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings) as gallery:
        add_job(fake, "a")
        await gallery.synced(1)
        seq = gallery.parts.index.seq
        add_job(fake, "b")  # happens while the browser is disconnected
        await gallery.synced(2)
        events = await read_events(gallery.url + "/api/stream", 1.0, headers={"Last-Event-ID": str(seq)})
        assert [job["key"] for _, _, data in events for job in data["jobs"]] == ["default/b"]


# --------------------------------------------------------------------------- security


async def test_security_headers_on_pages_json_streams_and_errors(kube_api_inprocess: Any, s3_settings: Any) -> None:
    async with serve_gallery(kube_api_inprocess, s3_settings) as gallery:
        for path in ("/", "/api/jobs", "/jobs/default/missing", "/static/gallery.js"):
            headers = (await get(gallery.url + path)).headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "style-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert f"img-src 'self' {s3_settings.minio_endpoint and 'http://' + s3_settings.minio_endpoint}" in csp
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
        assert (await get(gallery.url + "/")).headers["cache-control"] == "no-store"
        html = (await get(gallery.url + "/")).text
        assert "style=" not in html and "onclick" not in html


TOKEN = "s3cr3t-token-value"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("settings", "good", "bad"),
    [
        ({"auth": "token", "token": TOKEN, "host": "0.0.0.0"},
         [{"Authorization": f"Bearer {TOKEN}"}, basic("anyone", TOKEN)],
         [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}, basic("x", "wrong"),
          {"Authorization": "Basic !!!"}]),
        ({"auth": "basic", "basic_user": "ada", "basic_password": "lovelace", "host": "0.0.0.0"},
         [basic("ada", "lovelace")],
         [{}, basic("ada", "wrong"), basic("eve", "lovelace"), {"Authorization": "Bearer lovelace"}]),
        ({"auth": "proxy", "host": "0.0.0.0"},
         [{"X-Forwarded-User": "ada@example.com"}],
         [{}, {"X-Forwarded-User": ""}, {"X-Auth-Request-User": "ada"}]),
    ],
    ids=["token", "basic", "proxy"],
)
async def test_auth_modes_refuse_missing_and_wrong_credentials(
    kube_api_inprocess: Any, s3_settings: Any, settings: dict[str, Any], good: list[dict[str, str]],
    bad: list[dict[str, str]],
) -> None:
    async with serve_gallery(kube_api_inprocess, s3_settings, **settings) as gallery:
        add_job(kube_api_inprocess, "fox")
        await gallery.synced(1)
        for headers in bad:
            for path in ("/", "/api/jobs", "/jobs/default/fox", "/api/stream", "/static/gallery.js"):
                response = await get(gallery.url + path, headers=headers)
                assert response.status_code == 401, (headers, path)
                assert "fox" not in response.text
            if settings["auth"] != "proxy":
                assert "Basic" in response.headers.get("www-authenticate", "")
        for headers in good:
            response = await get(gallery.url + "/", headers=headers)
            assert response.status_code == 200 and "default/fox" in response.text
        if settings["auth"] == "proxy":
            assert "ada@example.com" in (await get(gallery.url + "/", headers=good[0])).text


def test_auth_none_refuses_a_non_loopback_bind_address() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        WebSettings(auth="none", host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback only"):
        WebSettings(host="10.1.2.3")
    assert WebSettings(host="127.0.0.1").host == "127.0.0.1"
    assert WebSettings(host="::1").host == "::1"
    with pytest.raises(ValueError, match="WEB_TOKEN"):
        WebSettings(auth="token", host="0.0.0.0")
    with pytest.raises(ValueError, match="WEB_BASIC_USER"):
        WebSettings(auth="basic", basic_user="ada", host="0.0.0.0")


def test_cli_refuses_auth_none_on_all_interfaces(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    from comfykube.cli import main

    monkeypatch.setenv("WEB_AUTH", "none")
    assert main(["web", "--host", "0.0.0.0"]) == 2
    assert "loopback only" in caplog.text


async def test_the_gallery_never_writes_to_the_cluster(kube_api_inprocess: Any, s3_settings: Any) -> None:
    fake = kube_api_inprocess
    async with serve_gallery(fake, s3_settings) as gallery:
        add_job(fake, "fox", status={"phase": "Running"})
        await gallery.synced(1)
        for path in ("/", "/jobs/default/fox", "/api/jobs", "/api/jobs/default/fox"):
            assert (await get(gallery.url + path)).status_code == 200
        await read_events(gallery.url + "/api/stream", 0.3)
        async with httpx.AsyncClient() as http:
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                assert (await http.request(method, gallery.url + "/jobs/default/fox")).status_code == 405
        methods = {getattr(request.method, "value", request.method) for request in fake._requests}
        assert methods and {str(m).upper() for m in methods} <= {"GET"}, methods


async def test_cards_and_links_are_built_once_and_shared(tmp_path: Path) -> None:
    from comfykube.storage import LocalStore
    from comfykube_web.cards import CardCache
    from comfykube_web.links import Links

    class CountingStore(LocalStore):
        calls = 0

        async def presign(self, key: str, expires_seconds: int) -> tuple[str, Any]:
            CountingStore.calls += 1
            return await super().presign(key, expires_seconds)  # file:// — not usable by a browser

    links = Links(CountingStore(tmp_path), 3600)
    index = JobIndex()
    job = JobView.from_obj({"metadata": {"name": "a", "namespace": "ns", "uid": "u"}, "spec": {"prompt": "x"},
                            "status": {"phase": "Succeeded", "images": [
                                {"key": "ns/a/u/0.png", "bytes": 1, "sha256": "a" * 64, "contentType": "image/png"}]}})
    index.upsert(job)
    cache = CardCache(links, index)
    first, text = await cache.get(job)
    assert (await cache.get(job))[0] is first and json.loads(text)["key"] == "ns/a"
    assert first["thumb"] is None  # a file:// URL is never handed to a browser
    await links.url("ns/a/u/0.png")
    assert CountingStore.calls == 1  # the failure is remembered, not retried per card
    changed = JobView.from_obj({"metadata": {"name": "a", "namespace": "ns", "uid": "u"}, "spec": {"prompt": "y"}})
    index.upsert(changed)
    assert (await cache.get(changed))[0]["prompt"] == "y"


async def test_the_feed_watches_on_after_a_stream_ends_and_lists_again_after_410(s3_settings: Any) -> None:
    from tests.standins.kube import FakeKube

    fake = FakeKube(event_log_limit=5)
    async with fake, fake.serve(), serve_gallery(fake, s3_settings) as gallery:
        add_job(fake, "a")
        await gallery.synced(1)
        fake.stop_watches()  # a normal end: the feed watches on from the last version it saw
        add_job(fake, "b")
        await gallery.synced(2)
        # A gap longer than the server remembers: the next watch is refused (410 Gone).
        fake.stop_watches()
        fake._delete(kmock.resource("comfykube.dev", "v1alpha1", "imagejobs"), "default", "a", {})
        for n in range(8):
            add_job(fake, f"later-{n}")
        await gallery.synced(9)
        # Only a fresh list can tell that "a" went away (its DELETED event was forgotten).
        assert {job.name for job in gallery.parts.index.jobs()} == {"b", *(f"later-{n}" for n in range(8))}


async def test_videos_play_on_the_job_page_and_never_sit_in_an_img(
    kube_api_inprocess: Any, s3_settings: Any, tmp_path: Path
) -> None:
    async with serve_gallery(kube_api_inprocess, s3_settings) as gallery:
        still = await stored_image(gallery.store, "default/clip/u/1.png", tmp=tmp_path)
        video = {"kind": "video", "key": "default/clip/u/0.mp4", "bytes": 5000, "sha256": "b" * 64,
                 "contentType": "video/mp4", "width": 64, "height": 64}
        add_job(kube_api_inprocess, "clip", status={**succeeded([video, still]), "model": "fallback.safetensors"})
        await gallery.synced(1)
        grid = (await get(gallery.url + "/")).text
        [thumb] = re.findall(r'<img data-field="thumb"[^>]* src="([^"]+)"', grid)
        assert "/default/clip/u/1.thumb.jpg?" in thumb  # the picture's preview, not the video
        page = (await get(gallery.url + "/jobs/default/clip")).text
        assert re.search(r'<video class="full" src="[^"]*/default/clip/u/0\.mp4\?', page)
        assert "fallback.safetensors" in page  # the checkpoint actually used
        csp = (await get(gallery.url + "/")).headers["content-security-policy"]
        assert "media-src 'self' http://" in csp


async def test_a_job_outside_the_filter_costs_one_gone_marker_per_stream(tmp_path: Path) -> None:
    from comfykube.storage import LocalStore
    from comfykube_web.cards import CardCache
    from comfykube_web.links import Links
    from comfykube_web.stream import Streams

    index = JobIndex()
    streams = Streams(index, CardCache(Links(LocalStore(tmp_path), 60), index), interval=0.5, limit=10)

    def job(phase: str, step: int) -> JobView:
        return JobView.from_obj({"metadata": {"name": "busy", "namespace": "ns", "uid": "u"}, "spec": {"prompt": "x"},
                                 "status": {"phase": phase, "progress": {"value": step, "max": 9}}})

    hidden: set[str] = set()
    since, sent = 0, []
    only_failed = Filters(phase="Failed")
    for step in range(3):
        index.upsert(job("Running", step))
        since, cards = await streams.batch(since, only_failed, None, hidden)
        sent.append([json.loads(c) for c in cards or []])
    assert sent == [[{"key": "ns/busy", "gone": True}], [], []]
    index.upsert(job("Failed", 3))  # now it matches: its card comes, and a later exit is told again
    since, cards = await streams.batch(since, only_failed, None, hidden)
    assert json.loads((cards or [])[0])["phase"] == "Failed"
    index.remove("ns/busy")
    since, cards = await streams.batch(since, only_failed, None, hidden)
    assert [json.loads(c) for c in cards or []] == [{"key": "ns/busy", "gone": True}]
