"""The gallery in a real browser: Debian's Chromium, driven by Playwright, against real processes.

The Kubernetes API stand-in, `comfykube operator`, the ComfyUI stand-in and nanio run
the jobs; `comfykube web` serves them; Chromium looks. Checked: the grid renders
thumbnails, a job's progress bar moves while ComfyUI renders, a job that finishes
appears without a reload, the job page shows the image at full size, and the strict
Content-Security-Policy blocks nothing the pages need.

Set COMFYKUBE_SCREENSHOT=docs/web-gallery.png to refresh the screenshots in docs/ (and web-job.png beside it).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import REPO, OperatorProcess, kubectl_json, operator_env, wait_until
from tests.web_support import WebProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Root needs --no-sandbox (see docs/web.md); the rest keeps Chromium light on a small CI machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

PROMPTS = [
    ("lighthouse", "a lighthouse on a cliff at dusk, oil painting"),
    ("koi", "koi fish in a green pond, top view"),
    ("city", "a neon city street in the rain, cinematic"),
    ("forest", "misty pine forest at sunrise"),
    ("xss", "<img src=x onerror=alert(1)> should stay text"),
]


@pytest.fixture(scope="module")
def chromium() -> str:
    # Fail, never skip: a browser test that cannot run must say so (install: apt-get install -y chromium).
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (see README)")
    return CHROMIUM


@pytest.fixture
def stack(kube_api: Any, comfyui_process: Any, s3_server: Any, s3_bucket: str, tmp_path: Path) -> Iterator[Any]:
    namespace = f"web-{uuid.uuid4().hex[:8]}"
    kube_api.install_crd(yaml.safe_load((REPO / "crds" / "imagejob.yaml").read_text(encoding="utf-8")))
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    env = operator_env(kube_api.env, comfyui_url=comfyui_process.url, s3=s3_server, bucket=s3_bucket)
    operator = OperatorProcess(env, namespace, tmp_path / "operator.log").start()
    web = WebProcess(dict(env, WEB_NAMESPACES=namespace, WEB_UPDATE_INTERVAL="0.5"), tmp_path / "web.log")
    try:
        web.start()
        yield kube_api, namespace, operator, web, comfyui_process
    finally:
        web.stop()
        operator.stop()


def create_job(kube: Any, namespace: str, name: str, prompt: str, **spec: Any) -> None:
    body = {"prompt": prompt, "width": 256, "height": 256, "steps": 3, **spec}
    kube.apply({"apiVersion": "comfykube.dev/v1alpha1", "kind": "ImageJob",
                "metadata": {"name": name, "namespace": namespace}, "spec": body})


def wait_succeeded(kube: Any, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = kubectl_json(kube, "get", "imagejob", name, "-n", namespace)
        phase = (job.get("status") or {}).get("phase")
        assert phase != "Failed", job["status"]
        return job if phase == "Succeeded" else None

    return wait_until(done, timeout=timeout, interval=0.3, what=f"{name} Succeeded")


def test_gallery_in_chromium_thumbnails_live_progress_and_job_page(
    chromium: str, stack: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    kube, namespace, _operator, web, comfyui = stack
    for seed, (name, prompt) in enumerate(PROMPTS, start=11):
        create_job(kube, namespace, name, prompt, seed=seed * 7919)
    # One that fails, to show what a failure looks like.
    create_job(kube, namespace, "bad-sampler", "a fox drawn with a sampler ComfyUI does not have", sampler="euler_a")
    for name, _ in PROMPTS:
        job = wait_succeeded(kube, namespace, name)
    assert job["status"]["images"][0]["thumbnailKey"].endswith(".thumb.jpg")
    wait_until(lambda: (kubectl_json(kube, "get", "imagejob", "bad-sampler", "-n", namespace).get("status") or {})
               .get("phase") == "Failed", timeout=60, what="bad-sampler Failed")

    violations: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(web.url + "/")
            page.evaluate("""() => { window.__sameDocument = true;
                document.addEventListener('securitypolicyviolation', e => {
                    (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); }); }""")

            # The grid renders thumbnails: real images, decoded, at thumbnail size.
            page.wait_for_function("() => [...document.querySelectorAll('article.card img[data-field=thumb]')]"
                                   ".filter(i => i.complete && i.naturalWidth > 0).length === 5", timeout=20_000)
            thumbs = page.eval_on_selector_all("article.card img[data-field=thumb][src]",
                                               "els => els.map(i => [i.currentSrc, i.naturalWidth])")
            assert len(thumbs) == 5, thumbs
            assert all(".thumb.jpg?" in src and 0 < width <= 384 for src, width in thumbs), thumbs
            # The markup prompt is text on the page, and no element came from it.
            assert page.locator("text=<img src=x onerror=alert(1)> should stay text").count() == 1
            assert page.evaluate("() => document.querySelectorAll('img[src=x]').length") == 0
            failed = page.locator(f'article.card[data-key="{namespace}/bad-sampler"]')
            assert "PreflightFailed" in (failed.locator("[data-field=message]").text_content() or "")

            # A slow job: its card appears without a reload and its progress bar moves.
            comfyui.configure(exec_seconds=8.0)
            create_job(kube, namespace, "slow", "a slow watercolour of a harbour", steps=16, seed=4242)
            card = page.locator(f'article.card[data-key="{namespace}/slow"]')
            card.wait_for(timeout=30_000)
            seen: list[float] = []
            shot = tmp_path / "web-gallery.png"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                value = float(card.locator("progress").evaluate("el => el.value"))
                if not seen or value != seen[-1]:
                    seen.append(value)
                    if 30 <= value <= 80 and not shot.exists():  # the screenshot in docs/: mid-render
                        page.screenshot(path=str(shot))
                if card.get_attribute("data-phase") == "Succeeded":
                    break
                time.sleep(0.2)
            moving = [v for v in seen if 0 < v < 100]
            assert len(set(moving)) >= 2, f"progress did not move: {seen}"
            assert seen == sorted(seen), seen
            # Finished: the card shows its thumbnail, still on the same document (no reload).
            card.locator("img[data-field=thumb]").evaluate(
                "img => new Promise(r => img.complete && img.naturalWidth ? r() : img.addEventListener('load', r))")
            assert ".thumb.jpg?" in card.locator("img[data-field=thumb]").evaluate("i => i.currentSrc")
            assert page.evaluate("() => window.__sameDocument") is True
            assert card.locator("[data-field=phase]").text_content() == "Succeeded"

            assert page.locator("#count").text_content() == "7 jobs"  # the count follows too
            if os.environ.get("COMFYKUBE_SCREENSHOT"):
                shutil.copy(shot, REPO / os.environ["COMFYKUBE_SCREENSHOT"])

            # The job page shows the image at full size and a manifest to render it again.
            card.locator("a.thumb").click()
            page.wait_for_url(f"**/jobs/{namespace}/slow")
            full = page.locator("img.full")
            full.evaluate("img => new Promise(r => img.complete && img.naturalWidth ? r() : "
                          "img.addEventListener('load', r))")
            assert full.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [256, 256]
            assert "/0.png?" in full.evaluate("i => i.currentSrc")
            manifest = yaml.safe_load(page.locator("#manifest").text_content() or "")
            assert manifest["spec"]["seed"] == 4242 and "status" not in manifest
            assert page.locator("section.events td", has_text="Succeeded").count() >= 1
            page.screenshot(path=str(tmp_path / "web-job.png"), full_page=True)
            if os.environ.get("COMFYKUBE_SCREENSHOT"):
                target = (REPO / os.environ["COMFYKUBE_SCREENSHOT"]).with_name("web-job.png")
                shutil.copy(tmp_path / "web-job.png", target)
            violations = page.evaluate("() => window.__csp || []")
        finally:
            browser.close()
    assert violations == [], violations
    assert errors == [], errors
    assert "Traceback" not in web.logs(), web.logs()[-3000:]
