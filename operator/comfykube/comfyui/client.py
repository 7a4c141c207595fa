"""`ComfyClient`: the HTTP calls to one ComfyUI, plus the shared WebSocket hub.

Every URL is absolute (`{base_url}/path`), every query value goes through
httpx's `params=` (encoded), every call has a timeout. Interpretation of the
answers lives elsewhere: `history.py` (/history, /queue), `events.py` (WS
frames), `errors_text.py` (error bodies), `download.py` (/view bytes),
`follow.py` (waiting for the end).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from comfykube.clock import REAL_CLOCK, Clock
from comfykube.comfyui.download import DEFAULT_MAX_BYTES, download_image
from comfykube.comfyui.errors_text import (
    describe_prompt_rejection,
    needs_allowed_values,
    not_offered,
)
from comfykube.comfyui.follow import follow_prompt
from comfykube.comfyui.health import check_health
from comfykube.comfyui.history import parse_history, parse_queue, prompt_state
from comfykube.comfyui.hub import EventHub, Watch
from comfykube.comfyui.models import (
    DownloadedImage,
    HealthReport,
    HistoryEntry,
    OutputImage,
    PreviewCallback,
    ProgressCallback,
    PromptPhase,
    PromptState,
    QueueSnapshot,
    UploadedImage,
)
from comfykube.comfyui.multipart import MultipartFile
from comfykube.comfyui.schema import ServerChoice, combo_values, input_spec
from comfykube.comfyui.transport import (
    describe_transport_error,
    json_body,
    make_http_client,
    normalize_base_url,
    request,
    status_text,
    unavailable,
)
from comfykube.errors import ComfyUIUnavailable, PreflightFailed, PromptRejected

log = logging.getLogger(__name__)


class ComfyClient:
    """Talks to one ComfyUI. Usable with or without `async with` (call `aclose()` when done).

    `client_id` identifies this process to ComfyUI (WS frames are sent only to
    the socket with the submitting client id); one is generated when omitted.
    Times (`poll_interval`, deadlines, TTLs, backoffs) are in `clock` seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        timeout: float = 30.0,
        clock: Clock = REAL_CLOCK,
        object_info_ttl: float = 60.0,
        ws_open_timeout: float = 10.0,
        ws_quiet_seconds: float = 60.0,
        download_timeout: float | None = None,
        max_download_bytes: int = DEFAULT_MAX_BYTES,
        refused_grace: float | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.client_id = client_id or f"comfykube-{uuid.uuid4().hex[:12]}"
        self.timeout = timeout
        self.clock = clock
        self.object_info_ttl = object_info_ttl
        self.ws_open_timeout = ws_open_timeout
        self.ws_quiet_seconds = ws_quiet_seconds
        self.download_timeout = download_timeout if download_timeout is not None else max(timeout, 60.0)
        self.max_download_bytes = max_download_bytes
        #: While following, seconds of nothing but refused connections before `BackendRefused`
        #: (None: refused counts like any failure; the operator sets COMFYUI_REFUSED_GRACE).
        self.refused_grace = refused_grace
        self._http: httpx.AsyncClient | None = None
        self._hub: EventHub | None = None
        self._object_info: dict[str, tuple[float, dict[str, Any]]] = {}
        self._checkpoints: tuple[float, list[str]] | None = None

    def __repr__(self) -> str:
        return f"ComfyClient({self.base_url!r}, client_id={self.client_id!r})"

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the WebSocket and the HTTP connection pool. The client can be used again after."""
        hub, self._hub = self._hub, None
        if hub is not None:
            await hub.aclose()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The lazily created httpx client (no base_url: every URL passed is absolute)."""
        if self._http is None or self._http.is_closed:
            self._http = make_http_client(self.timeout)
        return self._http

    @property
    def ws_connected(self) -> bool:
        """True while this client's WebSocket is open (it then reports a prompt's end first)."""
        return self._hub is not None and self._hub.connected

    @property
    def hub(self) -> EventHub:
        """The WebSocket hub for this client id (created on first use)."""
        if self._hub is None:
            self._hub = EventHub(
                self.base_url,
                self.client_id,
                clock=self.clock,
                open_timeout=self.ws_open_timeout,
                quiet_seconds=self.ws_quiet_seconds,
            )
        return self._hub

    def url(self, path: str) -> str:
        """Absolute URL of a fixed API path such as `/queue`."""
        return f"{self.base_url}{path}"

    async def _get_json(self, path: str) -> Any:
        url = self.url(path)
        response = await request(self.http, "GET", url)
        if response.status_code != 200:
            raise unavailable("GET", url, f"answered {status_text(response)}")
        return json_body(response, "GET", url)

    async def _post(self, path: str, payload: Mapping[str, Any]) -> None:
        url = self.url(path)
        response = await request(self.http, "POST", url, json_data=payload)
        if response.status_code != 200:
            raise unavailable("POST", url, f"answered {status_text(response)}")

    # -------------------------------------------------------------- health, models

    async def health(self, retries: int = 5, backoff: float = 0.5) -> HealthReport:
        """`check_health` on this client's URL, clock and connection pool."""
        return await check_health(
            self.base_url,
            retries=retries,
            backoff=backoff,
            http_timeout=self.timeout,
            clock=self.clock,
            http=self.http,
        )

    async def checkpoints(self, *, fresh: bool = True) -> list[str]:
        """Checkpoint file names this ComfyUI offers (`/models/checkpoints`).

        With `fresh=False` a list younger than `object_info_ttl` is reused (a burst of
        jobs asks once, not once per job).
        """
        now = self.clock.now()
        if not fresh and self._checkpoints is not None and now - self._checkpoints[0] < self.object_info_ttl:
            return list(self._checkpoints[1])
        body = await self._get_json("/models/checkpoints")
        if not isinstance(body, list):
            raise unavailable("GET", self.url("/models/checkpoints"), "answered something other than a list")
        names = [str(name) for name in body]
        self._checkpoints = (now, names)
        return list(names)

    async def models_in(self, folder: str) -> list[str]:
        """File names in one of ComfyUI's model folders (`/models/{folder}`, e.g. `loras`).

        A ComfyUI without that folder answers 404: that is an empty list, not an outage.
        """
        url = self.url(f"/models/{quote(folder, safe='')}")
        response = await request(self.http, "GET", url)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise unavailable("GET", url, f"answered {status_text(response)}")
        body = json_body(response, "GET", url)
        if not isinstance(body, list):
            raise unavailable("GET", url, "answered something other than a list")
        return [str(name) for name in body]

    async def object_info(self, class_type: str) -> dict[str, Any]:
        """`/object_info/{class}` for one node class, cached for `object_info_ttl` clock seconds.

        ComfyUI answers 200 `{}` for unknown classes; that comes back as `{}`.
        """
        cached = self._object_info.get(class_type)
        now = self.clock.now()
        if cached is not None and now - cached[0] < self.object_info_ttl:
            return cached[1]
        body = await self._get_json(f"/object_info/{quote(class_type, safe='')}")
        info = body.get(class_type) if isinstance(body, dict) else None
        info = info if isinstance(info, dict) else {}
        self._object_info[class_type] = (now, info)
        return info

    async def node_schemas(self) -> dict[str, Any]:
        """`/object_info` for every node class (not cached: a check asks for it once)."""
        body = await self._get_json("/object_info")
        if not isinstance(body, dict):
            raise unavailable("GET", self.url("/object_info"), "answered something other than an object")
        return body

    async def input_options(self, class_type: str, input_name: str) -> list[str] | None:
        """The allowed values of an enum input (e.g. KSampler.sampler_name), None if not an enum."""
        info = await self.object_info(class_type)
        inputs = info.get("input") or {}
        for group in ("required", "optional"):
            spec = (inputs.get(group) or {}).get(input_name)
            if spec is not None:
                return combo_values(spec)
        return None

    async def sampler_options(self) -> tuple[list[str], list[str]]:
        """(samplers, schedulers) this ComfyUI's KSampler accepts."""
        samplers = await self.input_options("KSampler", "sampler_name")
        schedulers = await self.input_options("KSampler", "scheduler")
        if samplers is None or schedulers is None:
            raise unavailable(
                "GET", self.url("/object_info/KSampler"), "did not list sampler_name and scheduler choices"
            )
        return samplers, schedulers

    async def preflight(
        self,
        checkpoint: str | None,
        sampler: str | None,
        scheduler: str | None,
        *,
        choices: Sequence[ServerChoice] = (),
    ) -> None:
        """Check values against what THIS ComfyUI offers; PreflightFailed names the bad one.

        `None` skips a check (e.g. the workflow's default checkpoint). `choices` are
        workflow parameters whose allowed values come from the server (LoRA names,
        upscale models, ControlNets): each must be in `/object_info/<class>`'s list.
        """
        problems: list[str] = []
        for choice in choices:
            problem = await self._choice_problem(choice)
            if problem is not None:
                problems.append(problem)
        if sampler is not None or scheduler is not None:
            samplers, schedulers = await self.sampler_options()
            if sampler is not None and sampler not in samplers:
                problems.append(not_offered("sampler", sampler, samplers))
            if scheduler is not None and scheduler not in schedulers:
                problems.append(not_offered("scheduler", scheduler, schedulers))
        if checkpoint is not None:
            installed = await self.checkpoints(fresh=False)
            if checkpoint not in installed:
                # Maybe installed since the list was cached: ask again before refusing.
                installed = await self.checkpoints()
            if checkpoint not in installed:
                if installed:
                    problems.append(not_offered("checkpoint", checkpoint, installed))
                else:
                    problems.append(f"checkpoint {checkpoint!r} is not installed: this ComfyUI has no checkpoints")
        if problems:
            raise PreflightFailed("; ".join(problems))

    async def _choice_problem(self, choice: ServerChoice) -> str | None:
        """Why `choice` is not offered by this ComfyUI (asking again once before refusing), or None."""
        for fresh in (False, True):
            if fresh:
                self._object_info.pop(choice.class_type, None)  # maybe installed since the cache filled
            info = await self.object_info(choice.class_type)
            if not info:
                if fresh:
                    return f"{choice.label}: node {choice.class_type} is not installed on this ComfyUI"
                continue
            spec = input_spec(info, choice.input)
            allowed = combo_values(spec) if spec is not None else None
            if allowed is None:
                if fresh:
                    return f"{choice.label}: {choice.class_type} on this ComfyUI lists no choices for {choice.input}"
                continue
            if choice.value in allowed:
                return None
        label = f"{choice.label} ({choice.class_type}.{choice.input})"
        if not allowed:
            return f"{label} {choice.value!r} is not installed: this ComfyUI offers none"
        return not_offered(label, choice.value, allowed)

    # ---------------------------------------------------------------- submission

    @asynccontextmanager
    async def watch(self, prompt_id: str) -> AsyncIterator[Watch]:
        """Subscribe to `prompt_id`'s WS frames and make sure the socket is up; enter BEFORE submit.

        If the socket cannot be opened within `ws_open_timeout` the watch is still
        returned (follow() polls history regardless).
        """
        watch = self.hub.subscribe(prompt_id)
        try:
            if not await self.hub.ensure_connected(self.ws_open_timeout):
                log.warning("ComfyUI WebSocket for %s is not up; following %s by polling", self, prompt_id)
            yield watch
        finally:
            if self._hub is not None:
                self._hub.unsubscribe(watch)

    async def submit(
        self, graph: Mapping[str, Any], prompt_id: str, *, extra_data: Mapping[str, Any] | None = None
    ) -> int:
        """POST /prompt with our `client_id` and the given `prompt_id`; returns the queue number.

        400 → PromptRejected with one readable line; 500 → PromptRejected (the
        body was malformed: a client bug, not retried); connection errors, time-outs
        and 502–504 → ComfyUIUnavailable. After a time-out the prompt may have been
        queued anyway: `lookup()` before submitting again.
        """
        _check_graph(graph)
        payload: dict[str, Any] = {"prompt": dict(graph), "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        url = self.url("/prompt")
        response = await request(self.http, "POST", url, json_data=payload)
        if response.status_code == 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            allowed = await self._allowed_for(body)
            raise PromptRejected(describe_prompt_rejection(body, allowed))
        if response.status_code == 500:
            raise PromptRejected(
                f"ComfyUI could not read the workflow (POST /prompt answered {status_text(response)}); "
                "this is a bug in the request, not an outage"
            )
        if response.status_code >= 500:
            raise unavailable("POST", url, f"answered {status_text(response)}")
        if response.status_code != 200:
            raise PromptRejected(f"POST /prompt answered {status_text(response)}")
        body = json_body(response, "POST", url)
        if not isinstance(body, dict):
            raise unavailable("POST", url, "answered JSON that is not an object")
        if body.get("prompt_id") not in (None, prompt_id):
            log.warning("ComfyUI renamed prompt %s to %s", prompt_id, body.get("prompt_id"))
        node_errors = body.get("node_errors")
        if isinstance(node_errors, Mapping) and node_errors:
            await self._refuse_partial(body, prompt_id)
        number = body.get("number")
        return int(number) if isinstance(number, int | float) else 0

    async def _refuse_partial(self, body: dict[str, Any], prompt_id: str) -> None:
        """A 200 whose `node_errors` is not empty: take the prompt back and refuse it.

        ComfyUI queues a prompt when at least one output node validates and silently drops
        the outputs whose nodes failed (`dependent_outputs`): the job would run, spend GPU
        time and lack outputs its workflow promises. It is cancelled (best effort, as it may
        already run) and refused as a 400 would be, naming the failing nodes.
        """
        queued = body.get("prompt_id")
        try:
            await self.cancel(queued if isinstance(queued, str) and queued else prompt_id)
        except ComfyUIUnavailable as exc:
            log.warning("could not take back prompt %s that ComfyUI accepted in part: %s", prompt_id, exc.message)
        allowed = await self._allowed_for(body)
        raise PromptRejected(
            "ComfyUI accepted only part of the workflow and would skip the outputs of the nodes that failed "
            f"validation: {describe_prompt_rejection(body, allowed)}"
        )

    async def _allowed_for(self, body: Any) -> dict[tuple[str, str], Sequence[str]]:
        """Allowed values for 400 errors that only say "(list of length N)"; best effort."""
        allowed: dict[tuple[str, str], Sequence[str]] = {}
        for class_type, input_name in needs_allowed_values(body):
            try:
                options = await self.input_options(class_type, input_name)
            except ComfyUIUnavailable:
                continue
            if options is not None:
                allowed[(class_type, input_name)] = options
        return allowed

    # ------------------------------------------------------------------- state

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished entry of `prompt_id`, or None while queued, running or unknown."""
        body = await self._get_json(f"/history/{quote(prompt_id, safe='')}")
        return parse_history(prompt_id, body)

    async def queue(self) -> QueueSnapshot:
        """`/queue` with pending prompts sorted by number."""
        return parse_queue(await self._get_json("/queue"))

    async def lookup(self, prompt_id: str) -> PromptState:
        """Where `prompt_id` is: UNKNOWN, PENDING(position), RUNNING or DONE(entry). For attach/resume."""
        # Queue first, then history: ComfyUI moves a prompt from the running list into the
        # history in one step (PromptQueue.task_done), so a prompt absent from the queue is
        # either in the history already or unknown. Two requests, no race.
        queue = await self.queue()
        state = prompt_state(None, queue, prompt_id)
        if state.phase is not PromptPhase.UNKNOWN:
            return state
        return prompt_state(await self.history(prompt_id), queue, prompt_id)

    async def follow(
        self,
        watch: Watch,
        prompt_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        on_preview: PreviewCallback | None = None,
        deadline_at: float | None = None,
        lost_polls: int = 3,
        poll_interval: float = 2.0,
        unreachable_grace: float | None = None,
        poll_first: bool = True,
        frames_complete: bool = False,
    ) -> HistoryEntry:
        """Wait for the prompt's end (WS + polling); see `follow.follow_prompt`."""
        return await follow_prompt(
            self,
            watch,
            prompt_id,
            clock=self.clock,
            on_progress=on_progress,
            on_preview=on_preview,
            deadline_at=deadline_at,
            lost_polls=lost_polls,
            poll_interval=poll_interval,
            unreachable_grace=unreachable_grace,
            refused_grace=self.refused_grace,
            poll_first=poll_first,
            frames_complete=frames_complete,
        )

    # ----------------------------------------------------------------- uploads

    async def upload_image(
        self,
        path: str | os.PathLike[str],
        *,
        filename: str,
        subfolder: str = "",
        content_type: str = "application/octet-stream",
    ) -> UploadedImage:
        """POST /upload/image (multipart, streamed: multipart.py) into `subfolder` of ComfyUI's input folder.

        `overwrite=false`: ComfyUI keeps a same-named file with the same bytes and answers
        the same name, and renames one with other bytes (`init (1).png`, capture 85), so the
        name it answers is the one to use in LoadImage (`UploadedImage.load_name`).
        ComfyUI stores anything (capture 86): check the file before uploading it.
        """
        url = self.url("/upload/image")
        fields = {"type": "input", "subfolder": subfolder, "overwrite": "false"}
        form = MultipartFile(path, "image", filename=filename, content_type=content_type, fields=fields)
        try:
            response = await self.http.post(
                url,
                content=form.chunks(),
                headers=form.headers(),
                timeout=self.download_timeout,
            )
        except httpx.HTTPError as exc:
            raise unavailable("POST", url, describe_transport_error(exc)) from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise unavailable("POST", url, f"answered {status_text(response)}")
        if response.status_code != 200:
            raise PromptRejected(f"ComfyUI refused the upload of {filename!r}: POST /upload/image answered "
                                 f"{status_text(response)}")
        body = json_body(response, "POST", url)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise unavailable("POST", url, "answered JSON without the stored file's name")
        return UploadedImage(
            name=body["name"],
            subfolder=str(body.get("subfolder") or ""),
            type=str(body.get("type") or "input"),
        )

    # --------------------------------------------------------------- downloads

    async def download(
        self,
        image: OutputImage,
        dest_dir: str | os.PathLike[str],
        *,
        expected_size: tuple[int, int] | None = None,
        preview_side: int | None = None,
    ) -> DownloadedImage:
        """Fetch one image through /view into a new file in `dest_dir`, checked (see download.py).

        `preview_side` asks for the first frame reduced to that size (for a thumbnail).
        """
        return await download_image(
            self.http,
            self.base_url,
            image,
            dest_dir,
            expected_size=expected_size,
            max_bytes=self.max_download_bytes,
            http_timeout=self.download_timeout,
            preview_side=preview_side,
        )

    # ---------------------------------------------------------------- cleanup

    async def cancel(self, prompt_id: str) -> None:
        """Remove the prompt if pending and interrupt it if running (only it, not others)."""
        await self._post("/queue", {"delete": [prompt_id]})
        await self._post("/interrupt", {"prompt_id": prompt_id})

    async def forget(self, prompt_id: str) -> None:
        """Delete the prompt's history entry (keeps ComfyUI's in-memory history small)."""
        await self._post("/history", {"delete": [prompt_id]})


def _check_graph(graph: Any) -> None:
    """Refuse shapes ComfyUI would answer with a bare 500 (UI-format lists, nodes without class_type)."""
    if not isinstance(graph, Mapping) or not graph:
        raise PromptRejected("the workflow must be a non-empty mapping of node id to node (API format)")
    for node_id, node in graph.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            raise PromptRejected(f"node {node_id} of the workflow has no class_type (is it in API format?)")
        if not isinstance(node.get("inputs", {}), Mapping):
            raise PromptRejected(f"node {node_id} of the workflow has inputs that are not a mapping")
