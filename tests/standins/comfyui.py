"""A ComfyUI 0.3.64 stand-in that answers like the real server did in the recorded captures.

The shapes, status codes, headers and WebSocket frame order come from
``/work/shared/comfyui-protocol/captures`` (real ComfyUI 0.3.64 on a CPU; the ones the tests
replay are copied into ``tests/data/comfyui/``). The stand-in runs
the standard txt2img graph (and a few model-free image nodes) without a model: KSampler just
sleeps for a simulated time, and SaveImage writes real, solid-colour PNG files with the prompt
in a ``tEXt`` chunk, so a client can download, check and upload them.

Three ways to run it:

* in-process: ``fake = FakeComfyUI(); await fake.start(); ...; await fake.stop()``
* in a background thread (sync code, benchmarks): ``with run_in_thread() as server: ...``
* as a process: ``python -m tests.standins.comfyui --port 0`` prints ``READY <url>``

Failure switches live in :class:`StandinConfig` (``fake.config.image_mode = "truncated"`` or
``fake.configure(image_mode="truncated")``) and are also reachable over HTTP for the process
mode: ``POST /_standin/config``, ``POST /_standin/restart``, ``POST /_standin/stop_listening``,
``GET /_standin/stats``. ``GET /_standin/requests`` lists every API request served, in order
(``"GET /queue"``, ``"POST /prompt"``: method and path, no query), for tests of request sequences.

Time: every duration in the config (``exec_seconds``, ``unhealthy_for_seconds``, restart
``down_seconds``) is *simulated* time; real time is that divided by ``time_scale``, matching
``comfykube.clock.ScaledClock`` on the client side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import functools
import hashlib
import heapq
import io
import json
import logging
import mimetypes
import os
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from tests.standins.comfyui_media import flac_bytes, mp4_bytes, webm_bytes, write_animation

log = logging.getLogger("comfyui-standin")

T = TypeVar("T")

COMFYUI_VERSION = "0.3.64"
SERVER_FEATURES: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": 104857600}
DEFAULT_CHECKPOINTS: tuple[str, ...] = ("sd15-base.safetensors", "random-sd15.safetensors")
#: LoRAs and upscale models on "disk" (the workflows' `choicesFrom: server` lists).
DEFAULT_LORAS: tuple[str, ...] = ("detail-tweaker.safetensors", "styles/ink wash.safetensors")
DEFAULT_UPSCALE_MODELS: tuple[str, ...] = ("4x-UltraSharp.pth", "RealESRGAN_x2.pth")
IMAGE_MODES: tuple[str, ...] = (
    "ok",
    "empty",
    "truncated",
    "html200",
    "wrong_magic",
    "not_found",
    "wrong_size",
)
WS_MODES: tuple[str, ...] = ("ok", "silent", "drop")
#: ComfyUI's `--preview-method` choices; `none` (its default) sends no preview frames.
PREVIEW_METHODS: tuple[str, ...] = ("none", "auto", "latent2rgb", "taesd")
#: ComfyUI's `--preview-size` default: previews are at most this many pixels on a side.
PREVIEW_SIZE = 512
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Private, ancillary, safe-to-copy chunk type: decoders must skip it, so padding never
#: changes the decoded picture.
PAD_CHUNK_TYPE = b"cpAd"
MAXIMUM_HISTORY_SIZE = 10000
_DATA_DIR = Path(__file__).with_name("data")
_NODE_CATALOGUE_FILE = _DATA_DIR / "comfyui_object_info.json"
#: LoadImage, VAEEncode and the animated savers from capture 82; SaveAudio and its audio nodes
#: (absent from that server) and VideoHelperSuite's VHS_VideoCombine written from their sources.
_IO_CATALOGUE_FILE = _DATA_DIR / "comfyui_object_info_io.json"
#: The nodes the shipped workflows add (LoRA, upscale models, scaling), as ComfyUI 0.3.64
#: describes them (copied from the 82_get_object_info_full capture); lists filled per config.
_WORKFLOW_NODES_FILE = _DATA_DIR / "comfyui_object_info_workflow_nodes.json"
_INDEX_HTML = (
    b"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"UTF-8\">\n<title>ComfyUI</title>\n"
    b"</head>\n<body class=\"litegraph grid\">\n<div id=\"vue-app\"></div>\n"
    b"<!-- comfykube ComfyUI stand-in -->\n</body>\n</html>\n"
)
_UNHEALTHY_HTML = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body>"
    b"<h1>503 Service Unavailable</h1><p>The server is temporarily unable to service your request."
    b"</p></body></html>"
)
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1>"
    b"<p>The upstream proxy could not fetch the image.</p></body></html>"
)


# --------------------------------------------------------------------------------------------
# configuration


@dataclasses.dataclass
class StandinConfig:
    """Behaviour switches; every field can be changed while the server runs.

    ``lose_next_prompt`` / ``fail_next_prompt`` are counters: ``True`` or ``1`` affects the
    next accepted prompt, ``3`` the next three.
    """

    #: Simulated seconds one prompt takes (spread over KSampler steps, else over the nodes).
    exec_seconds: float = 0.05
    #: Simulated seconds per real second (2.0 = everything twice as fast).
    time_scale: float = 1.0
    #: Checkpoint names on "disk" (object_info, /models/checkpoints, validation).
    checkpoints: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_CHECKPOINTS))
    #: LoRA files (LoraLoader.lora_name, /models/loras).
    loras: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_LORAS))
    #: Upscale model files (UpscaleModelLoader.model_name, /models/upscale_models).
    upscale_models: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_UPSCALE_MODELS))
    #: How GET /view answers for an existing file, see IMAGE_MODES.
    image_mode: str = "ok"
    #: "ok", "silent" (sockets stay open, nothing is sent) or "drop" (abort after N frames).
    ws_mode: str = "ok"
    #: Frames (including the hello) a socket gets before "drop" aborts it.
    ws_drop_after: int = 3
    #: Next N accepted prompts get a 200 and then vanish (never queued, never in history).
    lose_next_prompt: int = 0
    #: Next N accepted prompts fail at run time with an execution_error.
    fail_next_prompt: int = 0
    fail_exception_type: str = "torch.OutOfMemoryError"
    fail_message: str = "Allocation on device "
    #: Every route except /_standin/* answers 503 HTML for this many seconds from now.
    unhealthy_for_seconds: float = 0.0
    #: Bytes of padding (an ancillary chunk) added to every saved PNG, for benchmarks.
    pad_bytes: int = 0
    #: GET /view of an existing file sends at most this many bytes per (simulated) second; 0: no limit.
    view_bytes_per_second: float = 0.0
    #: Extra simulated seconds per executed node of a class, e.g. {"CheckpointLoaderSimple": 4.7}.
    node_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    #: `--preview-method`: other than "none", KSampler sends a JPEG preview frame after every step
    #: (type 4 with metadata to a socket that announced `supports_preview_metadata`, else type 1).
    preview_method: str = "none"
    #: False: answer like a ComfyUI from before metadata previews (type 1 frames even when asked for 4).
    preview_metadata: bool = True

    def __setattr__(self, name: str, value: Any) -> None:
        value = _coerce_config_value(name, value)
        object.__setattr__(self, name, value)
        if name == "unhealthy_for_seconds":
            # Remember when the switch was flipped: the outage is measured from then.
            object.__setattr__(self, "_unhealthy_since", time.monotonic())

    def unhealthy_until(self) -> float:
        """The monotonic time at which the simulated outage ends."""
        since: float = getattr(self, "_unhealthy_since", 0.0)
        return since + self.unhealthy_for_seconds / self.time_scale

    def to_dict(self) -> dict[str, Any]:
        """The public fields as JSON-able data."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _coerce_config_value(name: str, value: Any) -> Any:
    """Validate one config field; ValueError on bad input (HTTP control answers 400)."""
    if name in ("image_mode",) and value not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {IMAGE_MODES}, got {value!r}")
    if name in ("ws_mode",) and value not in WS_MODES:
        raise ValueError(f"ws_mode must be one of {WS_MODES}, got {value!r}")
    if name == "preview_method" and value not in PREVIEW_METHODS:
        raise ValueError(f"preview_method must be one of {PREVIEW_METHODS}, got {value!r}")
    if name == "time_scale":
        value = float(value)
        if value <= 0:
            raise ValueError("time_scale must be positive")
    if name in ("exec_seconds", "unhealthy_for_seconds", "view_bytes_per_second"):
        value = float(value)
        if value < 0:
            raise ValueError(f"{name} must not be negative")
    if name in ("lose_next_prompt", "fail_next_prompt", "ws_drop_after", "pad_bytes"):
        value = int(value)
        if value < 0:
            raise ValueError(f"{name} must not be negative")
    if name in ("checkpoints", "loras", "upscale_models"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        value = [str(v) for v in value]
    if name == "node_seconds":
        value = {str(k): float(v) for k, v in dict(value).items()}
    return value


# --------------------------------------------------------------------------------------------
# PNG files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=64)
def _idat_payload(width: int, height: int, rgb: int) -> bytes:
    """zlib stream of a solid RGB picture; cached because batches and reruns repeat colours."""
    pixel = bytes(((rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF))
    row = b"\x00" + pixel * width
    # Feed ~1 MB at a time so a 8k x 8k picture never needs its raw 200 MB in memory.
    rows_per_block = max(1, (1 << 20) // len(row))
    comp = zlib.compressobj(6)
    parts: list[bytes] = []
    left = height
    block = row * min(rows_per_block, height)
    while left > 0:
        n = min(rows_per_block, left)
        parts.append(comp.compress(block if n * len(row) == len(block) else row * n))
        left -= n
    parts.append(comp.flush())
    return b"".join(parts)


def png_bytes(width: int, height: int, rgb: int, text: dict[str, str] | None = None) -> bytes:
    """A complete RGB PNG of one colour with optional ``tEXt`` chunks (no padding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    for key, value in (text or {}).items():
        parts.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")))
    parts.append(_chunk(b"IDAT", _idat_payload(width, height, rgb)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


_PAD_BLOCK = bytes(1 << 20)


@functools.lru_cache(maxsize=16)
def _pad_crc(size: int) -> int:
    crc = zlib.crc32(PAD_CHUNK_TYPE)
    left = size
    while left > 0:
        n = min(left, len(_PAD_BLOCK))
        crc = zlib.crc32(_PAD_BLOCK[:n] if n < len(_PAD_BLOCK) else _PAD_BLOCK, crc)
        left -= n
    return crc


def write_png(path: Path, width: int, height: int, rgb: int, text: dict[str, str], pad_bytes: int = 0) -> int:
    """Write a PNG file, padded with a ``cpAd`` chunk of zeros; returns the file size.

    The padding is streamed in 1 MB blocks, so a 100 MB file costs no 100 MB buffer.
    """
    data = png_bytes(width, height, rgb, text)
    head, iend = data[:-12], data[-12:]
    with open(path, "wb") as fh:
        fh.write(head)
        if pad_bytes > 0:
            fh.write(struct.pack(">I", pad_bytes) + PAD_CHUNK_TYPE)
            left = pad_bytes
            while left > 0:
                n = min(left, len(_PAD_BLOCK))
                fh.write(_PAD_BLOCK if n == len(_PAD_BLOCK) else _PAD_BLOCK[:n])
                left -= n
            fh.write(struct.pack(">I", _pad_crc(pad_bytes)))
        fh.write(iend)
    return len(data) + (pad_bytes + 12 if pad_bytes > 0 else 0)


def read_png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def seed_colour(seed: int) -> int:
    """A stable, well-spread RGB colour for a sampler seed (Knuth's multiplicative hash)."""
    return ((seed * 2654435761) >> 4) & 0xFFFFFF


# --------------------------------------------------------------------------------------------
# node catalogue and validation


@functools.lru_cache(maxsize=1)
def _load_catalogue() -> dict[str, Any]:
    with open(_NODE_CATALOGUE_FILE, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    with open(_IO_CATALOGUE_FILE, encoding="utf-8") as fh:
        data.update(json.load(fh))
    with open(_WORKFLOW_NODES_FILE, encoding="utf-8") as fh:
        data.update(json.load(fh))
    return data


def is_link(value: Any) -> bool:
    """ComfyUI's test for ``["node_id", socket]`` inputs."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


def _input_info(class_info: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    for category in ("required", "optional"):
        spec = class_info["input"].get(category, {})
        if name in spec:
            entry = spec[name]
            extra = entry[1] if len(entry) > 1 else {}
            return entry[0], category, extra
    return None, None, {}


def _valid_inputs(class_info: dict[str, Any]) -> list[str]:
    # ComfyUI iterates a set here; we use the declared order so error order is stable
    # (and matches capture 81, where the checkpoint node is reported before KSampler).
    order = class_info.get("input_order", {})
    return list(order.get("required", [])) + list(order.get("optional", []))


def _types_compatible(received: Any, expected: Any) -> bool:
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


#: A node's ``VALIDATE_INPUTS``: (the inputs it takes, a function of their values → True or a message).
CustomValidator = tuple[tuple[str, ...], Callable[[dict[str, Any]], "bool | str"]]


def _validate_inputs(
    prompt: dict[str, Any],
    unique_id: str,
    validated: dict[str, tuple[bool, list[dict[str, Any]], str]],
    catalogue: dict[str, Any],
    validators: dict[str, CustomValidator] | None = None,
) -> tuple[bool, list[dict[str, Any]], str]:
    """One node's inputs, recursively through its links (ComfyUI's ``validate_inputs``)."""
    if unique_id in validated:
        return validated[unique_id]
    inputs = prompt[unique_id]["inputs"]
    class_type = prompt[unique_id]["class_type"]
    class_info = catalogue[class_type]
    errors: list[dict[str, Any]] = []
    valid = True
    custom = (validators or {}).get(class_type)
    # Inputs a VALIDATE_INPUTS takes skip the min/max/list checks; it judges them (LoadImage's image).
    custom_inputs = custom[0] if custom is not None else ()
    for name in _valid_inputs(class_info):
        input_type, category, extra = _input_info(class_info, name)
        if name not in inputs:
            if category == "required":
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": f"{name}",
                        "extra_info": {"input_name": name},
                    }
                )
            continue
        val = inputs[name]
        info = [input_type, extra]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(
                    {
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": f"{name}",
                        "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                    }
                )
                continue
            o_id = val[0]
            # A link to a missing node raises KeyError here, like ComfyUI, and the caller
            # turns it into exception_during_validation with a traceback.
            o_class_type = prompt[o_id]["class_type"]
            received_type = catalogue[o_class_type]["output"][val[1]]
            if not _types_compatible(received_type, input_type):
                details = f"{name}, received_type({received_type}) mismatch input_type({input_type})"
                errors.append(
                    {
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": details,
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_type": received_type,
                            "linked_node": val,
                        },
                    }
                )
                continue
            try:
                result = _validate_inputs(prompt, o_id, validated, catalogue, validators)
                if result[0] is False:
                    valid = False
                    continue
            except Exception as ex:
                valid = False
                validated[o_id] = (
                    False,
                    [
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "exception_message": str(ex),
                                "exception_type": _full_type_name(type(ex)),
                                "traceback": traceback.format_tb(ex.__traceback__),
                                "linked_node": val,
                            },
                        }
                    ],
                    o_id,
                )
                continue
        else:
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[name] = val
                if input_type == "INT":
                    val = int(val)
                    inputs[name] = val
                if input_type == "FLOAT":
                    val = float(val)
                    inputs[name] = val
                if input_type == "STRING":
                    val = str(val)
                    inputs[name] = val
                if input_type == "BOOLEAN":
                    val = bool(val)
                    inputs[name] = val
            except Exception as ex:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{name}, {val}, {ex}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    }
                )
                continue
            if name in custom_inputs:
                continue
            if "min" in extra and val < extra["min"]:
                errors.append(
                    {
                        "type": "value_smaller_than_min",
                        "message": "Value {} smaller than min of {}".format(val, extra["min"]),
                        "details": f"{name}",
                        "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                    }
                )
                continue
            if "max" in extra and val > extra["max"]:
                errors.append(
                    {
                        "type": "value_bigger_than_max",
                        "message": "Value {} bigger than max of {}".format(val, extra["max"]),
                        "details": f"{name}",
                        "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                    }
                )
                continue
            if isinstance(input_type, list) and val not in input_type:
                input_config: Any = info
                # ComfyUI hides long lists (scanned model paths): capture 81's
                # "(list of length 42)" with input_config null.
                if len(input_type) > 20:
                    list_info = f"(list of length {len(input_type)})"
                    input_config = None
                else:
                    list_info = str(input_type)
                errors.append(
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: '{val}' not in {list_info}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": val,
                        },
                    }
                )
                continue
    if custom is not None:
        given = {name: inputs[name] for name in custom[0] if name in inputs and not is_link(inputs[name])}
        answer = custom[1](given)
        if answer is not True:
            for name in given:
                details = name if answer is False else f"{name} - {answer}"
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {"input_name": name},
                    }
                )
    ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
    validated[unique_id] = ret
    return ret


def _full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return module + "." + klass.__qualname__


def validate_prompt(
    prompt: Any,
    catalogue: dict[str, Any],
    partial_targets: list[str] | None = None,
    validators: dict[str, CustomValidator] | None = None,
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """ComfyUI's ``validate_prompt``: (ok, error, outputs_to_execute, node_errors).

    A prompt that is not a dict raises (TypeError etc.), which the route turns into the
    plain-text 500 that ComfyUI sends for UI-format workflows (capture 51).
    """
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": "Cannot execute because a node is missing the class_type property.",
                    "details": f"Node ID '#{x}'",
                    "extra_info": {},
                },
                [],
                {},
            )
        class_type = prompt[x]["class_type"]
        class_info = catalogue.get(class_type)
        if class_info is None:
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {class_type} does not exist.",
                    "details": f"Node ID '#{x}'",
                    "extra_info": {},
                },
                [],
                {},
            )
        if class_info.get("output_node") is True and (partial_targets is None or x in partial_targets):
            outputs.append(x)
    if not outputs:
        return (
            False,
            {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
            [],
            {},
        )
    good_outputs: list[str] = []
    errors: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}
    for o in outputs:
        valid = False
        reasons: list[dict[str, Any]] = []
        try:
            m = _validate_inputs(prompt, o, validated, catalogue, validators)
            valid, reasons = m[0], m[1]
        except Exception as ex:
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": _full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                }
            ]
            validated[o] = (False, reasons, o)
        if valid is True:
            good_outputs.append(o)
            continue
        errors.append((o, reasons))
        if reasons:
            node_errors[o] = {"errors": reasons, "dependent_outputs": [], "class_type": prompt[o]["class_type"]}
        for node_id, result in validated.items():
            if result[0] is not True and result[1]:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": result[1],
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)
    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
        return (
            False,
            {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            },
            [],
            node_errors,
        )
    return True, None, good_outputs, node_errors


def execution_order(
    prompt: dict[str, Any], outputs: list[str], is_cached: Callable[[str], bool], catalogue: dict[str, Any]
) -> list[str]:
    """The order ComfyUI's ExecutionList runs nodes in (stack-built graph, UX-friendly pick).

    For the standard txt2img graph this gives 4, 5, 7, 6, 3, 8, 9 exactly as capture 74.
    Cached nodes are left out, except output nodes, which re-send their cached UI.
    """
    pending: dict[str, bool] = {}
    block_count: dict[str, int] = {}
    blocking: dict[str, dict[str, bool]] = {}

    def add_node(start: str) -> None:
        stack = [start]
        links: list[tuple[str, str]] = []
        while stack:
            uid = stack.pop()
            if uid in pending:
                continue
            pending[uid] = True
            block_count[uid] = 0
            blocking[uid] = {}
            for value in prompt[uid]["inputs"].values():
                if is_link(value) and not is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], uid))
        for frm, to in links:
            if not is_cached(frm):
                add_node(frm)
                if to not in blocking[frm]:
                    blocking[frm][to] = True
                    block_count[to] += 1

    def is_output(uid: str) -> bool:
        return bool(catalogue[prompt[uid]["class_type"]].get("output_node"))

    def pick(ready: list[str]) -> str:
        for uid in ready:
            if is_output(uid):
                return uid
        for uid in ready:
            if any(is_output(b) for b in blocking[uid]):
                return uid
        for uid in ready:
            if any(is_output(b2) for b in blocking[uid] for b2 in blocking[b]):
                return uid
        return ready[0]

    for o in outputs:
        add_node(o)
    order: list[str] = []
    while pending:
        ready = [uid for uid in pending if block_count[uid] == 0]
        if not ready:  # cycles are impossible after validation, but never spin
            ready = list(pending)
        uid = pick(ready)
        order.append(uid)
        del pending[uid]
        for b in blocking.pop(uid):
            block_count[b] -= 1
    return order


def node_signature(prompt: dict[str, Any], uid: str, memo: dict[str, str]) -> str:
    """Cache key of a node: class + constant inputs + signatures of linked ancestors.

    Like ComfyUI's classic cache the node id is not part of it, so the same graph under a new
    prompt_id is a cache hit (capture 36).
    """
    if uid in memo:
        return memo[uid]
    node = prompt[uid]
    parts: list[Any] = [node["class_type"]]
    for name in sorted(node["inputs"]):
        value = node["inputs"][name]
        if is_link(value):
            parts.append([name, "link", node_signature(prompt, value[0], memo), int(value[1])])
        else:
            parts.append([name, value])
    sig = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    memo[uid] = sig
    return sig


# --------------------------------------------------------------------------------------------
# execution model


@dataclasses.dataclass
class ImageBatch:
    """What flows between nodes instead of tensors: size and one colour per image."""

    width: int
    height: int
    colours: list[int]
    latent: bool = False


#: What a node returns: its output values and its UI (files it wrote), or None.
NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]


@dataclasses.dataclass
class QueueItem:
    """One accepted prompt: ComfyUI's ``(number, prompt_id, prompt, extra_data, outputs)``."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    record: dict[str, Any]

    def as_list(self) -> list[Any]:
        """The 5-element list GET /queue and history show."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclasses.dataclass
class _CacheEntry:
    values: tuple[Any, ...]
    ui: dict[str, Any] | None


class _Interrupted(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class _NodeFailed(Exception):
    def __init__(self, node_id: str, ex: BaseException, inputs: dict[str, Any]) -> None:
        super().__init__(str(ex))
        self.node_id = node_id
        self.ex = ex
        self.inputs = inputs


class _SimulatedFailure(Exception):
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# --------------------------------------------------------------------------------------------
# the server


class FakeComfyUI:
    """An aiohttp server that behaves like ComfyUI 0.3.64 over HTTP and WebSocket.

    Args:
        exec_seconds: simulated seconds per prompt (see :class:`StandinConfig`).
        time_scale: simulated seconds per real second.
        checkpoints: checkpoint names the server "has".
        output_dir: where SaveImage writes; a private temporary directory if None.
    """

    def __init__(
        self,
        *,
        exec_seconds: float = 0.05,
        time_scale: float = 1.0,
        checkpoints: tuple[str, ...] | list[str] = DEFAULT_CHECKPOINTS,
        output_dir: str | os.PathLike[str] | None = None,
        preview_method: str = "none",
    ) -> None:
        self.config = StandinConfig(exec_seconds=exec_seconds, time_scale=time_scale, checkpoints=list(checkpoints),
                                    preview_method=preview_method)
        self._own_base = Path(tempfile.mkdtemp(prefix="comfyui-standin-"))
        self.output_dir = Path(output_dir).resolve() if output_dir is not None else self._own_base / "output"
        self.input_dir = self._own_base / "input"
        self.temp_dir = self._own_base / "temp"
        for d in (self.output_dir, self.input_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._relisten_task: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._interrupt: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # queue and history (forgotten by restart())
        self._number = 0
        self._seq = 0
        self._pending: list[tuple[float, int, QueueItem]] = []
        self._running: QueueItem | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, _CacheEntry] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._client_id: str | None = None
        self._last_node_id: str | None = None
        # websockets
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._socket_requests: dict[web.WebSocketResponse, web.Request] = {}
        self._socket_frames: dict[web.WebSocketResponse, int] = {}
        #: Sockets whose first frame announced `supports_preview_metadata`.
        self._metadata_sockets: set[web.WebSocketResponse] = set()
        #: Preview frames sent, by binary event type (1 or 4).
        self._previews_sent: Counter[int] = Counter()
        # statistics for tests (kept across restart())
        self._submissions: Counter[str] = Counter()
        self._prompt_records: list[dict[str, Any]] = []
        self._interrupts: list[str | None] = []
        self._deletes: list[str] = []
        self._history_deletes: list[str] = []
        self._uploads: list[str] = []
        #: "METHOD /path" of every API request, oldest first (bounded: a long benchmark stays small).
        self._requests: deque[str] = deque(maxlen=100_000)
        self._rejected = 0
        self._restarts = 0
        self._catalogue = _load_catalogue()
        self._validation_catalogue: tuple[tuple[tuple[str, ...], ...], dict[str, Any]] | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket URL without the clientId query."""
        return f"ws://{self.host}:{self.port}/ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (loopback only; port 0 picks a free one)."""
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the stand-in only listens on loopback, not {host!r}")
        self.host = host
        self._wakeup = asyncio.Event()
        self._interrupt = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=SERVER_FEATURES["max_upload_size"])
        self._add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        server = getattr(self._site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        else:  # pragma: no cover - aiohttp internals changed
            self.port = port
        self._start_worker()

    async def stop(self) -> None:
        """Stop serving and clean up the private temporary directory."""
        if self._relisten_task is not None:
            self._relisten_task.cancel()
        await self._stop_worker()
        self._abort_sockets()
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
        shutil.rmtree(self._own_base, ignore_errors=True)

    async def __aenter__(self) -> FakeComfyUI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def configure(self, **changes: Any) -> StandinConfig:
        """Change several config fields at once; unknown names raise ValueError."""
        names = {f.name for f in dataclasses.fields(StandinConfig)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self.config, name, value)
        return self.config

    async def restart(self, down_seconds: float = 0.0, *, keep: Any = None) -> None:
        """Behave like a process restart: queue, history, cache and connections are gone.

        The port stays the same; with ``down_seconds`` (simulated) the port refuses
        connections for that long first. ``keep`` is a connection to spare (the control request).
        """
        await self._stop_worker()
        for _, _, item in self._pending:
            item.record["outcome"] = "restarted"
        self._pending.clear()
        self._history.clear()
        self._cache.clear()
        self._counters.clear()
        self._number = 0
        self._client_id = None
        self._last_node_id = None
        self._restarts += 1
        self._abort_sockets()
        self._close_connections(keep)
        self._start_worker()
        if down_seconds > 0:
            await self.stop_listening(down_seconds, keep=keep)

    async def stop_listening(self, for_seconds: float | None = None, *, keep: Any = None) -> None:
        """Refuse connections (port closed, open connections cut) like a dead process.

        With ``for_seconds`` (simulated) the port opens again by itself, else call
        :meth:`start_listening`. ``keep`` is a connection to spare (the control request).
        """
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self._abort_sockets()
        self._close_connections(keep)
        if for_seconds is not None:
            if self._relisten_task is not None:
                self._relisten_task.cancel()
            self._relisten_task = asyncio.create_task(self._relisten_after(for_seconds))

    async def start_listening(self) -> None:
        """Open the port again after :meth:`stop_listening`."""
        if self._site is not None or self._runner is None:
            return
        site = web.TCPSite(self._runner, self.host, self.port)
        for attempt in range(50):
            try:
                await site.start()
                break
            except OSError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.02)
        self._site = site

    async def _relisten_after(self, seconds: float) -> None:
        await asyncio.sleep(self._real(seconds))
        await self.start_listening()

    def _real(self, simulated_seconds: float) -> float:
        return max(0.0, simulated_seconds) / self.config.time_scale

    def _start_worker(self) -> None:
        self._worker_task = asyncio.create_task(self._worker(), name="comfyui-standin-worker")

    async def _stop_worker(self) -> None:
        task, self._worker_task = self._worker_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._running is not None:
            self._running.record["outcome"] = "restarted"
            self._running = None

    def _close_connections(self, keep: Any = None) -> None:
        # Keep-alive connections of a dead process are gone too; clients must reconnect.
        if self._runner is not None and self._runner.server is not None:
            for conn in list(self._runner.server.connections):
                if conn is not keep:
                    conn.force_close()

    def _abort_sockets(self) -> None:
        # A crashed process does not send close frames: cut the TCP connections.
        for ws, request in list(self._socket_requests.items()):
            if request.transport is not None:
                request.transport.abort()
            self._socket_requests.pop(ws, None)
        self._sockets.clear()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- introspection for tests ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for assertions: submissions per prompt_id, prompt records, interrupts, deletes."""
        return {
            "submissions": dict(self._submissions),
            "prompts": copy.deepcopy(self._prompt_records),
            "interrupts": list(self._interrupts),
            "deletes": list(self._deletes),
            "history_deletes": list(self._history_deletes),
            "rejected": self._rejected,
            "uploads": list(self._uploads),
            "requests": list(self._requests),
            "restarts": self._restarts,
            "previews_sent": {str(kind): count for kind, count in self._previews_sent.items()},
            "queue_remaining": self._queue_remaining(),
            # A list like ComfyUI's queue_running (empty when idle).
            "running": [self._running.prompt_id] if self._running else [],
            "pending": [e[2].prompt_id for e in sorted(self._pending)],
            "sockets": sorted(self._sockets),
        }

    @property
    def requests(self) -> list[str]:
        """`"METHOD /path"` of every API request served so far (not /_standin/*), oldest first."""
        return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the request log (a test looks at one job's requests only)."""
        self._requests.clear()

    @property
    def history(self) -> dict[str, dict[str, Any]]:
        """The live history map (prompt_id -> entry)."""
        return self._history

    async def wait_for_history(self, prompt_id: str, within: float = 10.0) -> dict[str, Any]:
        """Wait until ``prompt_id`` has a history entry (real seconds)."""
        deadline = time.monotonic() + within
        while prompt_id not in self._history:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no history for {prompt_id} after {within}s")
            await asyncio.sleep(0.01)
        return self._history[prompt_id]

    async def wait_idle(self, within: float = 10.0) -> None:
        """Wait until nothing is running or pending (real seconds)."""
        deadline = time.monotonic() + within
        while self._running is not None or self._pending:
            if time.monotonic() > deadline:
                raise TimeoutError("stand-in still busy")
            await asyncio.sleep(0.01)

    # ---- routing --------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        api: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self._ws_handler),
            ("GET", "/system_stats", self._system_stats),
            ("GET", "/features", self._features),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("GET", "/prompt", self._get_prompt),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_item),
            ("POST", "/history", self._post_history),
            ("GET", "/view", self._view),
            ("POST", "/interrupt", self._post_interrupt),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_class),
            ("GET", "/models", self._models),
            ("GET", "/models/{folder}", self._models_folder),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/embeddings", self._embeddings),
        ]
        for method, path, handler in api:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_get("/", self._index)
        app.router.add_get("/_standin/stats", self._ctl_stats)
        app.router.add_get("/_standin/requests", self._ctl_requests)
        app.router.add_get("/_standin/config", self._ctl_get_config)
        app.router.add_post("/_standin/config", self._ctl_config)
        app.router.add_post("/_standin/restart", self._ctl_restart)
        app.router.add_post("/_standin/stop_listening", self._ctl_stop_listening)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/_standin/"):
            self._requests.append(f"{request.method} {request.path}")
        if not request.path.startswith("/_standin/") and time.monotonic() < self.config.unhealthy_until():
            # What a proxy in front of a dead or booting ComfyUI says.
            return web.Response(status=503, body=_UNHEALTHY_HTML, content_type="text/html")
        return await handler(request)

    # ---- simple routes --------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=_INDEX_HTML,
            content_type="text/html",
            headers={"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"},
        )

    async def _system_stats(self, request: web.Request) -> web.Response:
        ram_total, ram_free = 25276063744, 24020832256
        return _json(
            {
                "system": {
                    "os": "posix",
                    "ram_total": ram_total,
                    "ram_free": ram_free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.13.0+cpu",
                    "embedded_python": False,
                    "argv": ["main.py", "--cpu", "--listen", self.host, "--port", str(self.port),
                             "--disable-auto-launch"],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": ram_total,
                        "vram_free": ram_free,
                        "torch_vram_total": ram_total,
                        "torch_vram_free": ram_free,
                    }
                ],
            }
        )

    async def _features(self, request: web.Request) -> web.Response:
        return _json(dict(SERVER_FEATURES))

    async def _embeddings(self, request: web.Request) -> web.Response:
        return _json([])

    def object_info(self) -> dict[str, Any]:
        """The node catalogue with the configured checkpoint list filled in."""
        info = copy.deepcopy(self._catalogue)
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(self.config.checkpoints)
        _fill_server_lists(info, self.config)
        if "LoadImage" in info:
            # The real list is the input folder's files, uploads with their subfolder (capture 97).
            info["LoadImage"]["input"]["required"]["image"][0] = self._input_files()
        return info

    def _input_files(self) -> list[str]:
        names = [
            path.relative_to(self.input_dir).as_posix()
            for path in sorted(self.input_dir.rglob("*"))
            if path.is_file()
        ]
        return names or ["example.png"]

    def _validators(self) -> dict[str, CustomValidator]:
        """LoadImage's VALIDATE_INPUTS: the file must exist in the input folder (capture 96)."""

        def image_exists(values: dict[str, Any]) -> bool | str:
            name = str(values.get("image", ""))
            for kind in ("input", "output", "temp"):  # annotated names: "x.png [output]"
                if name.endswith(f" [{kind}]"):
                    name = name[: -len(kind) - 3]
            full = (self.input_dir / name).resolve()
            inside = os.path.commonpath((str(full), str(self.input_dir))) == str(self.input_dir)
            return True if name and inside and full.is_file() else f"Invalid image file: {values.get('image')}"

        return {"LoadImage": (("image",), image_exists)}

    async def _object_info(self, request: web.Request) -> web.Response:
        return _json(self.object_info())

    async def _object_info_class(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = self.object_info()
        return _json({name: info[name]} if name in info else {})

    async def _models(self, request: web.Request) -> web.Response:
        return _json(["checkpoints", "clip", "clip_vision", "configs", "controlnet", "diffusion_models",
                      "embeddings", "loras", "upscale_models", "vae"])

    async def _models_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder == "checkpoints":
            return _json(list(self.config.checkpoints))
        if folder == "loras":
            return _json(list(self.config.loras))
        if folder == "upscale_models":
            return _json(list(self.config.upscale_models))
        if folder in {"clip", "clip_vision", "configs", "controlnet", "diffusion_models", "embeddings", "vae"}:
            return _json([])
        return web.Response(status=404)

    # ---- queue ----------------------------------------------------------------------------

    def _queue_remaining(self) -> int:
        return len(self._pending) + (1 if self._running is not None else 0)

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self._queue_remaining()}}

    async def _broadcast_status(self) -> None:
        await self._send("status", {"status": self._queue_info()}, None)

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.as_list()] if self._running is not None else []
        # The heap list as is: ComfyUI does not sort pending items either (capture 64).
        pending = [entry[2].as_list() for entry in self._pending]
        return _json({"queue_running": copy.deepcopy(running), "queue_pending": copy.deepcopy(pending)})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return _json(self._queue_info())

    async def _post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        changed = False
        if json_data.get("clear"):
            for _, _, item in self._pending:
                item.record["outcome"] = "cleared"
            changed = bool(self._pending)
            self._pending.clear()
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                self._deletes.append(id_to_delete)
                for i, entry in enumerate(self._pending):
                    if entry[2].prompt_id == id_to_delete:
                        entry[2].record["outcome"] = "deleted"
                        self._pending.pop(i)
                        heapq.heapify(self._pending)
                        changed = True
                        break
        if changed:
            await self._broadcast_status()
        return web.Response(status=200)

    async def _post_prompt(self, request: web.Request) -> web.Response:
        # Exceptions (bad JSON, prompt not a dict) propagate: aiohttp answers with the same
        # text/plain 500 "Server got itself in trouble" as ComfyUI (captures 50, 51).
        json_data = await request.json()
        if "number" in json_data:
            number: float = float(json_data["number"])
        else:
            number = self._number
            if json_data.get("front"):
                number = -number
            self._number += 1
        if "prompt" not in json_data:
            self._rejected += 1
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return _json({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = json_data.get("partial_execution_targets")
        valid = validate_prompt(prompt, self._catalogue_for_validation(), partial, self._validators())
        extra_data: dict[str, Any] = dict(json_data.get("extra_data", {}))
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid[0]:
            self._rejected += 1
            return _json({"error": valid[1], "node_errors": valid[3]}, status=400)
        for sensitive in ("auth_token_comfy_org", "api_key_comfy_org"):
            extra_data.pop(sensitive, None)
        self._submissions[prompt_id] += 1
        record: dict[str, Any] = {
            "prompt_id": prompt_id,
            "number": number,
            "client_id": extra_data.get("client_id"),
            "outcome": "queued",
            "submitted_at": time.time(),
        }
        self._prompt_records.append(record)
        if self.config.lose_next_prompt > 0:
            self.config.lose_next_prompt -= 1
            record["outcome"] = "lost"
        else:
            item = QueueItem(number, prompt_id, prompt, extra_data, valid[2], record)
            self._seq += 1
            heapq.heappush(self._pending, (number, self._seq, item))
            assert self._wakeup is not None
            self._wakeup.set()
            await self._broadcast_status()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})

    def _catalogue_for_validation(self) -> dict[str, Any]:
        # The lists on "disk" change with the config; rebuild the catalogue only when they did.
        lists = (tuple(self.config.checkpoints), tuple(self.config.loras), tuple(self.config.upscale_models))
        if self._validation_catalogue is None or self._validation_catalogue[0] != lists:
            self._validation_catalogue = (lists, self.object_info())
        return self._validation_catalogue[1]

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        assert self._interrupt is not None
        if prompt_id:
            self._interrupts.append(prompt_id)
            # Targeted: only when that prompt is the running one, else a silent no-op (cap 59).
            if self._running is not None and self._running.prompt_id == prompt_id:
                self._interrupt.set()
        else:
            self._interrupts.append(None)
            self._interrupt.set()
        return web.Response(status=200)

    # ---- history --------------------------------------------------------------------------

    async def _get_history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query.get("offset", -1))
        out: dict[str, Any] = {}
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        for i, key in enumerate(self._history):
            if i >= offset:
                out[key] = self._history[key]
                if max_items is not None and len(out) >= max_items:
                    break
        return _json(copy.deepcopy(out))

    async def _get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        if prompt_id in self._history:
            return _json({prompt_id: copy.deepcopy(self._history[prompt_id])})
        return _json({})

    async def _post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self._history.clear()
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                self._history_deletes.append(id_to_delete)
                self._history.pop(id_to_delete, None)
        return web.Response(status=200)

    # ---- files ----------------------------------------------------------------------------

    def _dir_for_type(self, kind: str) -> Path | None:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    def _view_path(self, query: Any) -> Path | int:
        """ComfyUI's /view checks, in its order: a file path, or the status code to answer."""
        if "filename" not in query:
            return 404
        filename = query["filename"]
        base: Path | None = None
        # ComfyUI's annotated names: "name.png [output]".
        for kind in ("output", "input", "temp"):
            suffix = f" [{kind}]"
            if filename.endswith(suffix):
                filename = filename[: -len(suffix)]
                base = self._dir_for_type(kind)
        if not filename:
            return 400
        if filename[0] == "/" or ".." in filename:
            return 400
        if base is None:
            base = self._dir_for_type(query.get("type", "output"))
        if base is None:
            return 400
        base_str = os.path.abspath(base)
        directory = base_str
        if "subfolder" in query:
            full = os.path.join(base_str, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), base_str)) != base_str:
                return 403
            directory = full
        path = Path(directory) / os.path.basename(filename)
        return path if path.is_file() else 404

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        found = self._view_path(query)
        if isinstance(found, int):
            return web.Response(status=found)
        path = found
        filename = path.name
        mode = self.config.image_mode
        if mode != "ok":
            return await self._view_broken(request, path, filename, mode)
        if "preview" in query or query.get("channel", "rgba") != "rgba":
            return await asyncio.to_thread(self._view_converted, path, filename, query)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript",
                            "text/css"}:
            content_type = "application/octet-stream"
        if self.config.view_bytes_per_second > 0:
            return await self._view_slowly(request, path, filename, content_type)
        # FileResponse streams from disk: a 100 MB picture costs no 100 MB buffer.
        return web.FileResponse(
            path, headers={"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
        )

    async def _view_slowly(
        self, request: web.Request, path: Path, filename: str, content_type: str
    ) -> web.StreamResponse:
        """The whole file, honestly framed, at `view_bytes_per_second` (a slow link or a busy disk)."""
        size = (await asyncio.to_thread(path.stat)).st_size
        resp = web.StreamResponse(
            status=200, headers={"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
        )
        resp.content_length = size
        await resp.prepare(request)
        rate = self.config.view_bytes_per_second * self.config.time_scale
        block = max(1, min(64 * 1024, int(rate / 10)))
        sent = 0
        while sent < size:
            data = await asyncio.to_thread(_read_range, path, sent, min(block, size - sent))
            if not data:
                break
            await resp.write(data)
            sent += len(data)
            await asyncio.sleep(len(data) / rate)
        await resp.write_eof()
        return resp

    def _view_converted(self, path: Path, filename: str, query: Any) -> web.Response:
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            preview = query.get("preview")
            if preview:
                fmt, _, quality = preview.partition(";")
                fmt = fmt if fmt in ("webp", "jpeg") else "webp"
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format=fmt.upper(), quality=int(quality or 90))
                return web.Response(body=buf.getvalue(), content_type=f"image/{fmt}",
                                    headers={"Content-Disposition": f'filename="{filename}"'})
            channel = query.get("channel", "rgba")
            buf = io.BytesIO()
            if channel == "a":
                rgba = img.convert("RGBA")
                alpha = rgba.getchannel("A")
                out = Image.new("RGBA", rgba.size)
                out.putalpha(alpha)
                out.save(buf, format="PNG")
            else:
                img.convert("RGB").save(buf, format="PNG")
            return web.Response(body=buf.getvalue(), content_type="image/png",
                                headers={"Content-Disposition": f'filename="{filename}"'})

    async def _view_broken(self, request: web.Request, path: Path, filename: str, mode: str) -> web.StreamResponse:
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if mode == "not_found":
            return web.Response(status=404)
        if mode == "empty":
            return web.Response(status=200, body=b"", headers={**disposition, "Content-Type": "image/png"})
        if mode == "html200":
            return web.Response(status=200, body=_HTML_ERROR_PAGE, content_type="text/html")
        if mode == "wrong_magic":
            head = await asyncio.to_thread(_read_head, path, 64 * 1024)
            body = b"GIF89a\x00\x00" + head[8:]
            return web.Response(status=200, body=body, headers={**disposition, "Content-Type": "image/png"})
        if mode == "wrong_size":
            width, height = await asyncio.to_thread(read_png_size, path)
            other = png_bytes(max(1, width // 2), max(1, height // 2) + 1, 0x336699)
            return web.Response(status=200, body=other, headers={**disposition, "Content-Type": "image/png"})
        # truncated: promise the whole file, send half, cut the connection.
        size = (await asyncio.to_thread(path.stat)).st_size
        resp = web.StreamResponse(status=200, headers={**disposition, "Content-Type": "image/png"})
        resp.content_length = size
        await resp.prepare(request)
        half = size // 2
        sent = 0
        while sent < half:
            block = await asyncio.to_thread(_read_range, path, sent, min(1 << 20, half - sent))
            if not block:
                break
            await resp.write(block)
            sent += len(block)
        await asyncio.sleep(0.01)  # let the partial body reach the socket before the cut
        if request.transport is not None:
            request.transport.abort()
        return resp

    async def _upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite") in ("true", "1")
        kind = str(post.get("type", "input"))
        base = self._dir_for_type(kind if kind in ("input", "temp", "output") else "input")
        if image is None or not hasattr(image, "file") or base is None:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        filename = await asyncio.to_thread(_store_upload, base, subfolder, image.filename, image.file, overwrite)
        if filename is None:
            return web.Response(status=400)
        self._uploads.append(f"{subfolder}/{filename}" if subfolder else filename)
        return _json({"name": filename, "subfolder": subfolder, "type": kind})

    # ---- websocket ------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            # Same clientId again: the new socket takes over; ComfyUI leaves the old one open
            # but sends it nothing more.
            self._sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self._sockets[sid] = ws
        self._socket_requests[ws] = request
        self._socket_frames[ws] = 0
        try:
            await self._send_to(ws, "status", {"status": self._queue_info(), "sid": sid})
            if self._client_id == sid and self._last_node_id is not None:
                await self._send_to(ws, "executing", {"node": self._last_node_id})
            first_message = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    data = None
                if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                    flags = data.get("data")
                    if isinstance(flags, dict) and flags.get("supports_preview_metadata") is True:
                        self._metadata_sockets.add(ws)
                    await self._send_to(ws, "feature_flags", dict(SERVER_FEATURES))
                first_message = False
        finally:
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
            self._socket_requests.pop(ws, None)
            self._socket_frames.pop(ws, None)
            self._metadata_sockets.discard(ws)
        return ws

    async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """ComfyUI's send_sync: to one clientId, or to every socket when sid is None."""
        if sid is None:
            targets = list(self._sockets.values())
        else:
            ws = self._sockets.get(sid)
            targets = [ws] if ws is not None else []
        for ws in targets:
            await self._send_to(ws, event, data)

    async def _send_to(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        mode = self.config.ws_mode
        if mode == "silent" or ws.closed:
            return
        try:
            await ws.send_str(json.dumps({"type": event, "data": data}))
        except (ConnectionError, RuntimeError) as ex:
            log.debug("ws send failed: %s", ex)
            return
        count = self._socket_frames.get(ws, 0) + 1
        self._socket_frames[ws] = count
        if mode == "drop" and count >= self.config.ws_drop_after:
            request = self._socket_requests.get(ws)
            if request is not None and request.transport is not None:
                request.transport.abort()

    async def _send_preview(self, sid: str | None, prompt_id: str, node: str, image: bytes) -> None:
        """A preview frame to the submitting socket, as ComfyUI's progress hook sends it."""
        ws = self._sockets.get(sid) if sid is not None else None
        if ws is None or ws.closed or self.config.ws_mode == "silent":
            return
        if ws in self._metadata_sockets and self.config.preview_metadata:
            # PREVIEW_IMAGE_WITH_METADATA: [u32 4][u32 length][JSON metadata][image] (comfy_execution/progress.py)
            meta = json.dumps({"node_id": node, "prompt_id": prompt_id, "display_node_id": node,
                               "parent_node_id": None, "real_node_id": node, "image_type": "image/jpeg"}).encode()
            kind, frame = 4, struct.pack(">II", 4, len(meta)) + meta + image
        else:
            # PREVIEW_IMAGE: [u32 1][u32 format, 1 = JPEG][image] (server.py send_image)
            kind, frame = 1, struct.pack(">II", 1, 1) + image
        try:
            await ws.send_bytes(frame)
        except (ConnectionError, RuntimeError) as ex:
            log.debug("ws send failed: %s", ex)
            return
        self._previews_sent[kind] += 1

    def _preview_image(self, latent: ImageBatch, colour: int, step: int, steps: int) -> bytes:
        """A JPEG that turns from grey to the final colour as the steps go (latent2rgb: 1/8 size)."""
        from PIL import Image

        scale = 8 if self.config.preview_method == "latent2rgb" else 1
        width, height = max(1, latent.width // scale), max(1, latent.height // scale)
        factor = min(1.0, PREVIEW_SIZE / max(width, height))
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
        mix = step / max(1, steps)
        rgb = tuple(int(0x7F + (((colour >> shift) & 0xFF) - 0x7F) * mix) for shift in (16, 8, 0))
        out = io.BytesIO()
        Image.new("RGB", size, rgb).save(out, "JPEG", quality=80)
        return out.getvalue()

    # ---- execution ------------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            _, _, item = heapq.heappop(self._pending)
            self._running = item
            item.record["outcome"] = "running"
            item.record["started_at"] = time.time()  # with finished_at: how long this "GPU" was busy
            await self._broadcast_status()
            try:
                await self._execute(item)
            except asyncio.CancelledError:
                item.record["outcome"] = "restarted"
                raise
            except Exception:  # a stand-in bug must not kill the worker
                log.exception("stand-in execution crashed")
                item.record["outcome"] = "crashed"
            finally:
                if self._running is item:
                    self._running = None
            await self._broadcast_status()
            if item.extra_data.get("client_id") is not None:
                await self._send("executing", {"node": None, "prompt_id": item.prompt_id},
                                 item.extra_data["client_id"])
            self._last_node_id = None

    async def _execute(self, item: QueueItem) -> None:
        assert self._interrupt is not None
        pid = item.prompt_id
        prompt = item.prompt
        client_id: str | None = item.extra_data.get("client_id")
        self._client_id = client_id
        self._interrupt.clear()
        messages: list[list[Any]] = []

        async def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            if client_id is not None or broadcast:
                await self._send(event, data, client_id)

        await add_message("execution_start", {"prompt_id": pid}, False)
        memo: dict[str, str] = {}
        sigs = {uid: node_signature(prompt, uid, memo) for uid in prompt}
        wanted = set(sigs.values())
        # Classic cache: only what the current prompt can use survives (capture 34).
        self._cache = {k: v for k, v in self._cache.items() if k in wanted}
        cached_nodes = [uid for uid in prompt if sigs[uid] in self._cache]
        await add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": pid}, False)

        def is_cached(uid: str) -> bool:
            return sigs[uid] in self._cache

        order = execution_order(prompt, item.outputs, is_cached, self._catalogue)
        to_run = [uid for uid in order if not is_cached(uid)]
        durations = self._plan_durations(prompt, to_run)
        fail_at: str | None = None
        if self.config.fail_next_prompt > 0 and to_run:
            self.config.fail_next_prompt -= 1
            samplers = [uid for uid in to_run if prompt[uid]["class_type"] == "KSampler"]
            fail_at = samplers[0] if samplers else to_run[-1]

        values: dict[str, tuple[Any, ...]] = {}
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        executed: list[str] = []
        progress: dict[str, dict[str, Any]] = {}

        async def progress_state(uid: str, state: str, value: float, maximum: float) -> None:
            progress[uid] = {
                "value": value,
                "max": maximum,
                "state": state,
                "node_id": uid,
                "prompt_id": pid,
                "display_node_id": uid,
                "parent_node_id": None,
                "real_node_id": uid,
            }
            await self._send("progress_state", {"prompt_id": pid, "nodes": copy.deepcopy(progress)}, client_id)

        def meta_for(uid: str) -> dict[str, Any]:
            return {"node_id": uid, "display_node": uid, "parent_node": None, "real_node_id": uid}

        status_str = "success"
        try:
            for uid in order:
                class_type = prompt[uid]["class_type"]
                entry = self._cache.get(sigs[uid])
                if entry is not None:
                    # Full cache hit of an output node: re-send its old UI, write nothing.
                    if client_id is not None:
                        await self._send("executed", {"node": uid, "display_node": uid,
                                                      "output": entry.ui, "prompt_id": pid}, client_id)
                    await progress_state(uid, "finished", 1, 1)
                    values[uid] = entry.values
                    if entry.ui:
                        outputs[uid] = entry.ui
                        meta[uid] = meta_for(uid)
                    continue
                await progress_state(uid, "running", 0.0, 1.0)
                self._last_node_id = uid
                await self._send("executing", {"node": uid, "display_node": uid, "prompt_id": pid}, client_id)
                if self._interrupt.is_set():
                    raise _Interrupted(uid)
                inputs = self._resolve_inputs(prompt, uid, values, sigs)
                try:
                    out, ui = await self._run_node(item, uid, class_type, inputs, durations.get(uid, 0.0),
                                                   fail=(uid == fail_at), progress_state=progress_state)
                except (_Interrupted, asyncio.CancelledError):
                    raise
                except Exception as ex:
                    raise _NodeFailed(uid, ex, inputs) from ex
                values[uid] = out
                executed.append(uid)
                self._cache[sigs[uid]] = _CacheEntry(out, ui)
                if ui:
                    outputs[uid] = ui
                    meta[uid] = meta_for(uid)
                    if client_id is not None:
                        await self._send("executed", {"node": uid, "display_node": uid, "output": ui,
                                                      "prompt_id": pid}, client_id)
                finished = progress[uid]
                if class_type == "KSampler":
                    await progress_state(uid, "finished", finished["value"], finished["max"])
                else:
                    await progress_state(uid, "finished", 1.0, 1.0)
        except _Interrupted as intr:
            status_str = "error"
            item.record["outcome"] = "interrupted"
            await add_message("execution_interrupted", {"prompt_id": pid, "node_id": intr.node_id,
                                                        "node_type": prompt[intr.node_id]["class_type"],
                                                        "executed": list(executed)}, True)
        except _NodeFailed as failed:
            status_str = "error"
            item.record["outcome"] = "error"
            ex = failed.ex
            if isinstance(ex, _SimulatedFailure):
                exception_type, exception_message = self.config.fail_exception_type, str(ex)
            else:
                exception_type, exception_message = _full_type_name(type(ex)), str(ex)
            await add_message(
                "execution_error",
                {
                    "prompt_id": pid,
                    "node_id": failed.node_id,
                    "node_type": prompt[failed.node_id]["class_type"],
                    "executed": list(executed),
                    "exception_message": exception_message,
                    "exception_type": exception_type,
                    "traceback": traceback.format_tb(ex.__traceback__),
                    "current_inputs": {k: [str(v)] for k, v in failed.inputs.items()},
                    "current_outputs": list(prompt),
                },
                False,
            )
        else:
            item.record["outcome"] = "success"
            item.record["finished_at"] = time.time()  # for latency benchmarks
            await add_message("execution_success", {"prompt_id": pid}, False)
        self._write_history(item, outputs, meta, status_str, messages)

    def _write_history(self, item: QueueItem, outputs: dict[str, Any], meta: dict[str, Any], status_str: str,
                       messages: list[list[Any]]) -> None:
        if len(self._history) > MAXIMUM_HISTORY_SIZE:
            self._history.pop(next(iter(self._history)))
        # Plain assignment: a re-used prompt_id overwrites in place (capture 39).
        self._history[item.prompt_id] = {
            "prompt": copy.deepcopy(item.as_list()),
            "outputs": copy.deepcopy(outputs),
            "status": {"status_str": status_str, "completed": status_str == "success", "messages": messages},
            "meta": meta,
        }

    def _plan_durations(self, prompt: dict[str, Any], to_run: list[str]) -> dict[str, float]:
        """Simulated seconds per executed node: exec_seconds goes to the samplers if any run."""
        total = self.config.exec_seconds
        samplers = [uid for uid in to_run if prompt[uid]["class_type"] == "KSampler"]
        carriers = samplers or to_run
        plan = {uid: (total / len(carriers) if uid in carriers else 0.0) for uid in to_run}
        for uid in to_run:
            plan[uid] += self.config.node_seconds.get(prompt[uid]["class_type"], 0.0)
        return plan

    def _resolve_inputs(self, prompt: dict[str, Any], uid: str, values: dict[str, tuple[Any, ...]],
                        sigs: dict[str, str]) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for name, value in prompt[uid]["inputs"].items():
            if is_link(value):
                src = value[0]
                out = values.get(src)
                if out is None:
                    out = self._cache[sigs[src]].values
                    values[src] = out
                resolved[name] = out[int(value[1])]
            else:
                resolved[name] = value
        return resolved

    async def _sleep_node(self, simulated: float) -> None:
        # Interrupts land at node boundaries, so ordinary nodes sleep through them.
        await asyncio.sleep(self._real(simulated))

    async def _run_node(
        self,
        item: QueueItem,
        uid: str,
        class_type: str,
        inputs: dict[str, Any],
        seconds: float,
        *,
        fail: bool,
        progress_state: Callable[[str, str, float, float], Awaitable[None]],
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        assert self._interrupt is not None
        if class_type == "KSampler":
            steps = int(inputs["steps"])
            latent: ImageBatch = inputs["latent_image"]
            per_step = seconds / max(1, steps)
            for step in range(1, steps + 1):
                # Samplers check for interrupts inside each step, so wait on the flag.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._interrupt.wait(), timeout=self._real(per_step))
                if self._interrupt.is_set():
                    raise _Interrupted(uid)
                if fail:
                    raise _SimulatedFailure(self.config.fail_message)
                await progress_state(uid, "running", step, steps)
                await self._send("progress", {"value": step, "max": steps, "prompt_id": item.prompt_id,
                                              "node": uid}, item.extra_data.get("client_id"))
                if self.config.preview_method != "none":
                    preview = self._preview_image(latent, seed_colour(int(inputs["seed"])), step, steps)
                    await self._send_preview(item.extra_data.get("client_id"), item.prompt_id, uid, preview)
            seed = int(inputs["seed"])
            colours = [seed_colour(seed + i) for i in range(len(latent.colours))]
            return (ImageBatch(latent.width, latent.height, colours, latent=True),), None
        await self._sleep_node(seconds)
        if fail:
            raise _SimulatedFailure(self.config.fail_message)
        if class_type == "CheckpointLoaderSimple":
            name = inputs["ckpt_name"]
            return ({"model": name}, {"clip": name}, {"vae": name}), None
        if class_type == "CLIPTextEncode":
            return ({"conditioning": inputs["text"]},), None
        if class_type == "EmptyLatentImage":
            # SD latents are 1/8 of the picture: sizes round down to a multiple of 8.
            w, h = int(inputs["width"]) // 8 * 8, int(inputs["height"]) // 8 * 8
            return (ImageBatch(w, h, [0x7F7F7F] * int(inputs["batch_size"]), latent=True),), None
        if class_type == "LatentUpscale":
            src = inputs["samples"]
            w, h = _scaled_size(src, int(inputs["width"]), int(inputs["height"]))
            return (ImageBatch(w // 8 * 8, h // 8 * 8, list(src.colours), latent=True),), None
        if class_type == "VAEDecode":
            src = inputs["samples"]
            return (ImageBatch(src.width, src.height, list(src.colours)),), None
        if class_type == "EmptyImage":
            n = int(inputs["batch_size"])
            return (ImageBatch(int(inputs["width"]), int(inputs["height"]), [int(inputs["color"])] * n),), None
        if class_type == "ImageBlur":
            return (inputs["image"],), None
        if class_type == "ImageScale":
            src = inputs["image"]
            w, h = _scaled_size(src, int(inputs["width"]), int(inputs["height"]))
            return (ImageBatch(w, h, list(src.colours)),), None
        result = _run_workflow_node(class_type, inputs)
        if result is not None:
            return result, None
        if class_type in ("SaveImage", "PreviewImage"):
            images: ImageBatch = inputs["images"]
            return (), await self._save_images(item, class_type, images, inputs.get("filename_prefix"))
        media_node = self._media_nodes().get(class_type)
        if media_node is not None:
            return await media_node(item, inputs)
        raise RuntimeError(f"stand-in cannot execute {class_type}")  # pragma: no cover

    # ---- input images, animations, video, audio ---------------------------------------------
    # One function per node, so nodes can be added without touching the others.

    def _media_nodes(self) -> dict[str, Callable[[QueueItem, dict[str, Any]], Awaitable[NodeResult]]]:
        return {
            "LoadImage": self._node_load_image,
            "VAEEncode": self._node_vae_encode,
            "VAEEncodeForInpaint": self._node_vae_encode,
            "SaveAnimatedWEBP": self._node_save_animated_webp,
            "SaveAnimatedPNG": self._node_save_animated_png,
            "VHS_VideoCombine": self._node_video_combine,
            "EmptyLatentAudio": self._node_empty_latent_audio,
            "VAEDecodeAudio": self._node_vae_decode_audio,
            "SaveAudio": self._node_save_audio,
        }

    async def _node_load_image(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        """The uploaded file's size and its first pixel's colour (validation made sure it exists)."""
        from PIL import Image

        path = self.input_dir / str(inputs["image"])

        def read() -> tuple[int, int, int]:
            with Image.open(path) as img:
                img.load()  # a broken upload fails here, as in ComfyUI
                r, g, b = img.convert("RGB").getpixel((0, 0))  # type: ignore[misc]
                return img.width, img.height, (r << 16) | (g << 8) | b

        width, height, colour = await asyncio.to_thread(read)
        return (ImageBatch(width, height, [colour]), ImageBatch(width, height, [0], latent=False)), None

    async def _node_vae_encode(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        """Latents of the picture; sizes round down to a multiple of 8 as VAEEncode crops them."""
        src: ImageBatch = inputs["pixels"]
        return (ImageBatch(src.width // 8 * 8, src.height // 8 * 8, list(src.colours), latent=True),), None

    async def _save_animation(self, item: QueueItem, images: ImageBatch, prefix: str, ext: str, fmt: str,
                              fps: float, **options: object) -> dict[str, Any]:
        folder, filename, counter, subfolder = self._save_path(prefix, self.output_dir, images.width, images.height)
        file = f"{filename}_{counter:05}_.{ext}"
        await asyncio.to_thread(write_animation, Path(folder) / file, fmt, images.width, images.height,
                                list(images.colours), fps, **options)
        self._counters[(folder, os.path.normcase(filename))] = counter + 1
        # Listed under "images" with a parallel "animated" list (capture 91).
        return {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": [True]}

    async def _node_save_animated_webp(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        return (), await self._save_animation(
            item, inputs["images"], str(inputs["filename_prefix"]), "webp", "WEBP", float(inputs["fps"]),
            lossless=bool(inputs["lossless"]), quality=int(inputs["quality"]),
        )

    async def _node_save_animated_png(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        return (), await self._save_animation(
            item, inputs["images"], str(inputs["filename_prefix"]), "png", "PNG", float(inputs["fps"]),
            compress_level=int(inputs["compress_level"]),
        )

    async def _node_video_combine(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        """VHS_VideoCombine: the file is reported under "gifs", with its format (VideoHelperSuite)."""
        images: ImageBatch = inputs["images"]
        fmt = str(inputs["format"])
        fps = float(inputs["frame_rate"])
        base, kind = (self.output_dir, "output") if inputs.get("save_output", True) else (self.temp_dir, "temp")
        folder, filename, counter, subfolder = self._save_path(
            str(inputs["filename_prefix"]), base, images.width, images.height
        )
        ext = {"image/gif": "gif", "image/webp": "webp", "video/h264-mp4": "mp4", "video/webm": "webm"}[fmt]
        file = f"{filename}_{counter:05}.{ext}"
        target = Path(folder) / file
        if ext in ("gif", "webp"):
            await asyncio.to_thread(write_animation, target, ext.upper(), images.width, images.height,
                                    list(images.colours), fps)
        else:
            data = mp4_bytes(len(images.colours), fps) if ext == "mp4" else webm_bytes(len(images.colours), fps)
            await asyncio.to_thread(target.write_bytes, data)
        self._counters[(folder, os.path.normcase(filename))] = counter + 1
        entry = {"filename": file, "subfolder": subfolder, "type": kind, "format": fmt, "frame_rate": fps,
                 "workflow": f"{filename}_{counter:05}.png", "fullpath": str(target)}
        return ((True, [str(target)]),), {"gifs": [entry]}

    async def _node_empty_latent_audio(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        return ({"audio_seconds": float(inputs["seconds"]), "batch": int(inputs["batch_size"])},), None

    async def _node_vae_decode_audio(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        latent = inputs["samples"]
        return ({"seconds": latent["audio_seconds"], "batch": latent["batch"], "sample_rate": 44100},), None

    async def _node_save_audio(self, item: QueueItem, inputs: dict[str, Any]) -> NodeResult:
        """SaveAudio: a real FLAC per batch item, reported under "audio"."""
        audio = inputs["audio"]
        folder, filename, counter, subfolder = self._save_path(str(inputs["filename_prefix"]), self.output_dir, 0, 0)
        results = []
        for _ in range(int(audio["batch"])):
            file = f"{filename}_{counter:05}_.flac"
            # Capped: the stand-in need not write minutes of sound to prove the format.
            data = flac_bytes(min(float(audio["seconds"]), 2.0), int(audio["sample_rate"]))
            await asyncio.to_thread((Path(folder) / file).write_bytes, data)
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
        self._counters[(folder, os.path.normcase(filename))] = counter
        return (), {"audio": results}

    async def _save_images(self, item: QueueItem, class_type: str, images: ImageBatch,
                           filename_prefix: str | None) -> dict[str, Any]:
        if class_type == "PreviewImage":
            base, kind = self.temp_dir, "temp"
            prefix = "ComfyUI_temp_" + uuid.uuid4().hex[:5]
        else:
            base, kind = self.output_dir, "output"
            prefix = filename_prefix if filename_prefix is not None else "ComfyUI"
        folder, filename, counter, subfolder = self._save_path(prefix, base, images.width, images.height)
        text = {"prompt": json.dumps(item.prompt)}
        for key, value in (item.extra_data.get("extra_pnginfo") or {}).items():
            text[str(key)] = json.dumps(value)
        results = []
        pad = self.config.pad_bytes
        for batch_number, colour in enumerate(images.colours):
            name = filename.replace("%batch_num%", str(batch_number))
            file = f"{name}_{counter:05}_.png"
            await asyncio.to_thread(write_png, Path(folder) / file, images.width, images.height, colour, text, pad)
            results.append({"filename": file, "subfolder": subfolder, "type": kind})
            counter += 1
        self._counters[(folder, os.path.normcase(filename))] = counter
        return {"images": results}

    def _save_path(self, filename_prefix: str, base: Path, width: int, height: int) -> tuple[str, str, int, str]:
        """ComfyUI's ``get_save_image_path``: subfolder from the prefix, next free counter."""
        output_dir = os.path.abspath(base)
        if "%" in filename_prefix:
            now = time.localtime()
            for key, val in (("%width%", width), ("%height%", height), ("%year%", now.tm_year),
                             ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                             ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                             ("%second%", f"{now.tm_sec:02}")):
                filename_prefix = filename_prefix.replace(key, str(val))
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        common = os.path.commonpath((output_dir, os.path.abspath(full_output_folder)))
        if common != output_dir:
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                + "\n full_output_folder: " + os.path.abspath(full_output_folder)
                + "\n         output_dir: " + output_dir
                + "\n         commonpath: " + common
                + "\n"
            )
        key = (full_output_folder, os.path.normcase(filename))
        counter = self._counters.get(key)
        if counter is None:
            # First use since start/restart: scan the folder like ComfyUI does every time.
            counter = 1
            if os.path.isdir(full_output_folder):
                prefix_len = len(filename)
                best = 0
                for existing in os.listdir(full_output_folder):
                    head = existing[: prefix_len + 1]
                    if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
                        continue
                    try:
                        digits = int(existing[prefix_len + 1:].split("_")[0])
                    except ValueError:
                        digits = 0
                    best = max(best, digits)
                counter = best + 1
            else:
                os.makedirs(full_output_folder, exist_ok=True)
        return full_output_folder, filename, counter, subfolder

    # ---- control routes -------------------------------------------------------------------

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return _json(self.requests)

    async def _ctl_get_config(self, request: web.Request) -> web.Response:
        return _json(self.config.to_dict())

    async def _ctl_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.configure(**changes)
        except (ValueError, TypeError) as ex:
            return _json({"error": str(ex)}, status=400)
        return _json(self.config.to_dict())

    async def _ctl_restart(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        down = float(body.get("down_seconds", 0.0)) if isinstance(body, dict) else 0.0
        await self.restart(down, keep=request.protocol)
        resp = _json({"restarted": True, "port": self.port})
        resp.force_close()
        return resp

    async def _ctl_stop_listening(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if seconds is None:
            return _json({"error": "seconds is required over HTTP (nobody could reopen the port)"}, 400)
        await self.stop_listening(float(seconds), keep=request.protocol)
        resp = _json({"listening_again_in": float(seconds)})
        resp.force_close()
        return resp


def _read_head(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _read_range(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def _store_upload(base: Path, subfolder: str, name: str, src: Any, overwrite: bool) -> str | None:
    """/upload/image's file handling: returns the stored name or None for a bad subfolder."""
    full = os.path.join(base, os.path.normpath(subfolder))
    if os.path.commonpath((os.path.abspath(full), str(base))) != str(base):
        return None
    os.makedirs(full, exist_ok=True)
    filename = os.path.basename(name)
    stem, ext = os.path.splitext(filename)
    i = 1
    while os.path.exists(os.path.join(full, filename)) and not overwrite:
        # ComfyUI's compare_image_hash: the same bytes again keep the file and its name (capture 84);
        # other bytes get the next free "name (i).ext" (capture 85).
        if _same_bytes(os.path.join(full, filename), src):
            return filename
        filename = f"{stem} ({i}){ext}"
        i += 1
    with open(os.path.join(full, filename), "wb") as fh:
        shutil.copyfileobj(src, fh)
    return filename


def _same_bytes(path: str, src: Any) -> bool:
    """Whether the upload `src` (a file object) holds exactly the bytes of `path`; rewinds `src`."""
    digest = hashlib.sha256()
    src.seek(0)
    for block in iter(lambda: src.read(1 << 20), b""):
        digest.update(block)
    src.seek(0)
    with open(path, "rb") as fh:
        existing = hashlib.file_digest(fh, "sha256")
    return existing.hexdigest() == digest.hexdigest()


def _fill_server_lists(info: dict[str, Any], config: StandinConfig) -> None:
    """The LoRA and upscale-model lists as the configured "disk" holds them.

    LoraLoader's list is 0.3.x's `[[names], {...}]`, UpscaleModelLoader's the newer
    `["COMBO", {"options": [...]}]`, exactly as the captured 0.3.64 answers them.
    """
    info["LoraLoader"]["input"]["required"]["lora_name"][0] = list(config.loras)
    info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = list(config.upscale_models)


def _upscale_model_factor(name: str) -> int:
    """The factor an upscale model is named for (`4x-UltraSharp` → 4, `RealESRGAN_x2` → 2); 4 otherwise."""
    import re  # local: keeps this block separate from the module's imports (parallel work merges)

    match = re.search(r"(?:^|[^0-9])([1-8])x|x([1-8])(?:[^0-9]|$)", name, flags=re.IGNORECASE)
    return int(match.group(1) or match.group(2)) if match else 4


def _run_workflow_node(class_type: str, inputs: dict[str, Any]) -> tuple[Any, ...] | None:
    """The nodes of the LoRA, hires-fix and upscale workflows; None for other classes.

    Sizes follow ComfyUI: LatentUpscaleBy scales the latent (1/8 of the picture) and rounds,
    ImageScaleBy rounds the picture's size, a model upscales by the factor in its name.
    """
    if class_type == "LoraLoader":
        lora = {"lora": inputs["lora_name"], "strength": (inputs["strength_model"], inputs["strength_clip"])}
        return ({**inputs["model"], **lora}, {**inputs["clip"], **lora})
    if class_type == "LatentUpscaleBy":
        src: ImageBatch = inputs["samples"]
        scale = float(inputs["scale_by"])
        w, h = round(src.width // 8 * scale) * 8, round(src.height // 8 * scale) * 8
        return (ImageBatch(w, h, list(src.colours), latent=True),)
    if class_type == "ImageScaleBy":
        src = inputs["image"]
        scale = float(inputs["scale_by"])
        return (ImageBatch(max(1, round(src.width * scale)), max(1, round(src.height * scale)), list(src.colours)),)
    if class_type == "UpscaleModelLoader":
        return ({"upscale_model": inputs["model_name"], "factor": _upscale_model_factor(inputs["model_name"])},)
    if class_type == "ImageUpscaleWithModel":
        src, factor = inputs["image"], int(inputs["upscale_model"]["factor"])
        return (ImageBatch(src.width * factor, src.height * factor, list(src.colours)),)
    return None


def _scaled_size(src: ImageBatch, width: int, height: int) -> tuple[int, int]:
    if width == 0 and height == 0:
        return src.width, src.height
    if width == 0:
        width = max(1, round(src.width * height / src.height))
    if height == 0:
        height = max(1, round(src.height * width / src.width))
    return width, height


# --------------------------------------------------------------------------------------------
# background thread helper


class ThreadedComfyUI:
    """A :class:`FakeComfyUI` on its own event loop in a daemon thread, for sync code."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self._host = host
        self._port = port
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="comfyui-standin", daemon=True)
        self.fake: FakeComfyUI | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        assert self.fake is not None
        return self.fake.url

    @property
    def config(self) -> StandinConfig:
        """The live config (attribute writes are safe from any thread)."""
        assert self.fake is not None
        return self.fake.config

    def configure(self, **changes: Any) -> StandinConfig:
        """Thread-safe :meth:`FakeComfyUI.configure`."""
        assert self.fake is not None
        fake = self.fake

        async def apply() -> StandinConfig:
            return fake.configure(**changes)

        return self.call(apply())

    def stats(self) -> dict[str, Any]:
        """Thread-safe :meth:`FakeComfyUI.stats`."""
        assert self.fake is not None
        fake = self.fake

        async def read() -> dict[str, Any]:
            return fake.stats()

        return self.call(read())

    def restart(self, down_seconds: float = 0.0) -> None:
        """Thread-safe :meth:`FakeComfyUI.restart`."""
        assert self.fake is not None
        self.call(self.fake.restart(down_seconds))

    def __enter__(self) -> ThreadedComfyUI:
        self._thread.start()

        async def boot() -> FakeComfyUI:
            fake = FakeComfyUI(**self._kwargs)
            await fake.start(self._host, self._port)
            return fake

        self.fake = self.call(boot())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fake is not None:
            self.call(self.fake.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.contextmanager
def run_in_thread(**kwargs: Any) -> Iterator[ThreadedComfyUI]:
    """``with run_in_thread(exec_seconds=0.1) as server: httpx.get(server.url + "/queue")``."""
    with ThreadedComfyUI(**kwargs) as server:
        yield server


# --------------------------------------------------------------------------------------------
# process mode


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.standins.comfyui", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8188, help="port (0 = pick a free one)")
    parser.add_argument("--exec-seconds", type=float, default=0.05)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--checkpoints", default=",".join(DEFAULT_CHECKPOINTS), help="comma-separated names")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--pad-bytes", type=int, default=0)
    parser.add_argument("--preview-method", default="none", choices=PREVIEW_METHODS,
                        help="as ComfyUI's: other than none, KSampler sends a preview frame per step")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeComfyUI(
        exec_seconds=args.exec_seconds,
        time_scale=args.time_scale,
        checkpoints=[c for c in args.checkpoints.split(",") if c],
        output_dir=args.output_dir,
        preview_method=args.preview_method,
    )
    fake.config.pad_bytes = args.pad_bytes
    await fake.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {fake.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tests.standins.comfyui``."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
