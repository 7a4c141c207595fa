"""Frame parsing, history/queue interpretation and error text, replayed from real ComfyUI captures.

No server needed: every input here was recorded from ComfyUI 0.3.64
(copied into `tests/data/comfyui/`, see tests/captures.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfykube.comfyui.errors_text import (
    describe_prompt_rejection,
    did_you_mean,
    needs_allowed_values,
    not_offered,
)
from comfykube.comfyui.events import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionSuccess,
    OtherEvent,
    PreviewImage,
    ProgressEvent,
    StatusEvent,
    parse_frame,
)
from comfykube.comfyui.history import outcome, parse_history, parse_queue, prompt_state
from comfykube.comfyui.models import OutputImage, PromptPhase, QueueSnapshot
from comfykube.errors import ExecutionFailed, Interrupted
from tests.captures import captures_dir

CAPTURES = captures_dir()

def capture(number: int) -> dict[str, Any]:
    (path,) = CAPTURES.glob(f"{number:02d}_*.json")
    return json.loads(path.read_text())


def frames(number: int) -> list[str]:
    """The capture's WS messages re-serialised as the text frames the server sent."""
    return [json.dumps(m["json"]) for m in capture(number)["messages"] if m.get("kind") == "text"]


def body(number: int) -> Any:
    return capture(number)["response"]["body"]


# ------------------------------------------------------------------ WS frames


def test_success_frames_parse_into_progress_executed_and_done_markers() -> None:
    cap = capture(17)
    events = [parse_frame(f) for f in frames(17)]
    assert all(e is not None for e in events)
    assert isinstance(events[0], StatusEvent) and events[0].queue_remaining == 1
    executed = [e for e in events if isinstance(e, Executed)]
    assert executed[0].images[0]["filename"] == "single image_00003_.png"
    assert any(isinstance(e, ExecutionSuccess) and e.terminal for e in events)
    last = events[-1]
    assert isinstance(last, Executing) and last.node is None and last.terminal
    assert last.prompt_id == cap["prompt_id"]
    assert any(isinstance(e, OtherEvent) and e.type == "progress_state" for e in events)


def test_ksampler_progress_frames_carry_value_and_max() -> None:
    raw = capture(81)["exchanges"]["ws_steps3"]["frames"]
    events = [parse_frame(json.dumps(f)) for f in raw]
    progress = [(e.value, e.max) for e in events if isinstance(e, ProgressEvent)]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    first = events[0]
    assert isinstance(first, StatusEvent) and first.sid == "extra-08b93c"


def test_runtime_error_frame_keeps_message_and_drops_traceback() -> None:
    events = [parse_frame(f) for f in frames(54)]
    (error,) = [e for e in events if isinstance(e, ExecutionError)]
    assert error.terminal and error.node_type == "SaveImage"
    assert "outside the output folder" in error.exception_message
    assert not hasattr(error, "traceback")


def test_interrupt_frame_is_terminal() -> None:
    events = [parse_frame(f) for f in frames(62)]
    (event,) = [e for e in events if isinstance(e, ExecutionInterrupted)]
    assert event.terminal and event.node_id == "11" and event.node_type == "ImageBlur"


def test_full_cache_hit_has_no_executing_frames_but_still_ends() -> None:
    events = [parse_frame(f) for f in frames(36)]
    cached = [e for e in events if isinstance(e, ExecutionCached)]
    assert cached[0].nodes == ("1", "2")
    assert any(isinstance(e, ExecutionSuccess) for e in events)


def test_frames_of_two_prompts_on_one_socket_carry_their_own_ids() -> None:
    ids = {getattr(parse_frame(f), "prompt_id", None) for f in frames(71)} - {None}
    assert len(ids) == 2


def test_preview_frames_are_parsed_and_garbage_is_ignored() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"rest"
    preview = parse_frame((1).to_bytes(4, "big") + (2).to_bytes(4, "big") + png)
    assert isinstance(preview, PreviewImage)
    assert (preview.prompt_id, preview.content_type, preview.data) == (None, "image/png", png)
    # Binary frames that are no preview picture stay ignored: another type, a wrong format word,
    # bytes that are not the announced format, a frame too short for its header.
    assert parse_frame((3).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"text") is None
    assert parse_frame((1).to_bytes(4, "big") + (7).to_bytes(4, "big") + png) is None
    assert parse_frame((1).to_bytes(4, "big") + (1).to_bytes(4, "big") + png) is None
    assert parse_frame(b"\x00\x00\x00\x01") is None
    assert parse_frame("not json") is None
    assert parse_frame("[1, 2]") is None
    assert parse_frame('{"data": {}}') is None
    flags = parse_frame(frames(13)[1])
    assert isinstance(flags, OtherEvent) and flags.type == "feature_flags"


# ------------------------------------------------------------- history, queue


def test_history_is_empty_while_queued_running_and_for_unknown_ids() -> None:
    for number in (11, 15, 56, 69, 79):
        assert parse_history("whatever", body(number)) is None
        assert parse_history(capture(number)["request"]["path"].rsplit("/", 1)[-1], body(number)) is None


def test_successful_history_lists_output_images() -> None:
    cap = capture(16)
    prompt_id = next(iter(cap["response"]["body"]))
    entry = parse_history(prompt_id, cap["response"]["body"])
    assert entry is not None and entry.succeeded and entry.completed
    assert entry.output_images == (OutputImage("single image_00003_.png", "capture", "output", "2"),)
    assert outcome(entry) is entry


def test_batch_history_lists_both_images() -> None:
    raw = body(29)
    entry = parse_history(next(iter(raw)), raw)
    assert entry is not None
    assert [i.filename for i in entry.output_images] == ["batch_00003_.png", "batch_00004_.png"]


def test_temp_images_are_not_outputs() -> None:
    raw = {
        "p": {
            "outputs": {
                "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
                "12": {"images": [{"filename": "prev.png", "subfolder": "", "type": "temp"}]},
            },
            "status": {"status_str": "success", "completed": True, "messages": []},
        }
    }
    entry = parse_history("p", raw)
    assert entry is not None
    assert [i.filename for i in entry.output_images] == ["a.png"]
    assert len(entry.images) == 2


def test_failed_history_raises_execution_failed_with_exception_message() -> None:
    raw = body(53)
    entry = parse_history(next(iter(raw)), raw)
    assert entry is not None and not entry.succeeded
    with pytest.raises(ExecutionFailed) as info:
        outcome(entry)
    message = info.value.message
    assert message.startswith("node 2 (SaveImage) failed:")
    assert "Saving image outside the output folder is not allowed" in message
    assert "Traceback" not in message and "execution.py" not in message


def test_interrupted_history_raises_interrupted_not_execution_failed() -> None:
    raw = body(61)
    entry = parse_history(next(iter(raw)), raw)
    assert entry is not None and entry.status_str == "error"
    with pytest.raises(Interrupted) as info:
        outcome(entry)
    assert "node 11 (ImageBlur)" in info.value.message


def test_queue_pending_is_sorted_by_number_and_positions_count_prompts_ahead() -> None:
    queue = parse_queue(body(64))
    running = "2e10c189-9a8c-4e04-a430-ca9c8b550310"
    front = "08408325-0d1b-483c-86af-8bf3b9c6506a"  # number -43: front=true
    back = "58697671-3d32-44ee-b884-aef8e2501cc5"  # number 42
    assert [i.prompt_id for i in queue.pending] == [front, back]
    assert queue.position(running) == 0 and queue.is_running(running)
    assert queue.position(front) == 1
    assert queue.position(back) == 2
    assert queue.position("nope") is None
    assert queue.length == 3


def test_lookup_state_combines_history_and_queue() -> None:
    queue = parse_queue(body(64))
    assert prompt_state(None, queue, "2e10c189-9a8c-4e04-a430-ca9c8b550310").phase is PromptPhase.RUNNING
    pending = prompt_state(None, queue, "58697671-3d32-44ee-b884-aef8e2501cc5")
    assert pending.phase is PromptPhase.PENDING and pending.position == 2
    assert prompt_state(None, parse_queue(body(4)), "x").phase is PromptPhase.UNKNOWN
    raw = body(16)
    entry = parse_history(next(iter(raw)), raw)
    assert entry is not None
    done = prompt_state(entry, QueueSnapshot(), entry.prompt_id)
    assert done.phase is PromptPhase.DONE and done.entry is entry


# ------------------------------------------------------------------ error text


def test_unknown_node_class_message() -> None:
    assert describe_prompt_rejection(body(40)) == (
        "Cannot execute because node NoSuchNodeXYZ does not exist. (Node ID '#1')"
    )


def test_missing_input_names_node_and_input() -> None:
    assert describe_prompt_rejection(body(41)) == "node 1 (EmptyImage) width: Required input is missing"


def test_bad_checkpoint_lists_installed_ones() -> None:
    assert describe_prompt_rejection(body(42)) == (
        "node 4 (CheckpointLoaderSimple) ckpt_name: 'does-not-exist.safetensors' not in [random-sd15.safetensors]"
    )


def test_value_below_min_and_wrong_type() -> None:
    assert describe_prompt_rejection(body(43)) == "node 1 (EmptyImage) width: Value 0 smaller than min of 1"
    text = describe_prompt_rejection(body(44))
    assert text.startswith("node 1 (EmptyImage) width: Failed to convert an input value to a INT value")
    assert "abc" in text


def test_link_type_mismatch() -> None:
    text = describe_prompt_rejection(body(45))
    assert text.startswith("node 2 (SaveImage) images: Return type mismatch between linked nodes")
    assert "LATENT" in text and "IMAGE" in text


def test_validation_exception_drops_the_traceback() -> None:
    text = describe_prompt_rejection(body(46))
    assert text == "node 2 (SaveImage): Exception when validating node: KeyError '77'"
    assert "File" not in text and "execution.py" not in text


def test_top_level_errors_without_node_errors() -> None:
    assert describe_prompt_rejection(body(47)) == "Prompt has no outputs"
    assert describe_prompt_rejection(body(48)) == (
        "Cannot execute because a node is missing the class_type property. (Node ID '#1')"
    )
    assert describe_prompt_rejection(body(49)) == "No prompt provided"


def test_plain_text_body_is_still_one_line() -> None:
    text = describe_prompt_rejection(capture(50)["response"]["body_text"])
    assert "\n" not in text and "Server got itself in trouble" in text


def test_sampler_error_without_list_is_filled_from_object_info() -> None:
    raw = capture(81)["exchanges"]["bad_sampler"]["body"]
    assert needs_allowed_values(raw) == [("KSampler", "sampler_name")]
    bare = describe_prompt_rejection(raw)
    assert bare == "node 3 (KSampler) sampler_name: 'euler_a' not in (list of length 42)"
    samplers = _object_info()["KSampler"]["input"]["required"]["sampler_name"][0]
    text = describe_prompt_rejection(raw, {("KSampler", "sampler_name"): samplers})
    assert text.startswith("node 3 (KSampler) sampler_name: 'euler_a' not in [euler, euler_cfg_pp, ")
    assert "(and 30 more)" in text and text.endswith("(did you mean 'euler_ancestral'?)")


def test_two_bad_nodes_give_two_messages_in_node_order() -> None:
    raw = capture(81)["exchanges"]["bad_sampler_and_ckpt"]["body"]
    parts = describe_prompt_rejection(raw).split("; ")
    assert parts[0].startswith("node 3 (KSampler) sampler_name:")
    assert parts[1] == (
        "node 4 (CheckpointLoaderSimple) ckpt_name: 'nope.safetensors' not in [random-sd15.safetensors]"
    )


def test_steps_too_big() -> None:
    raw = capture(81)["exchanges"]["steps_too_big"]["body"]
    assert describe_prompt_rejection(raw) == "node 3 (KSampler) steps: Value 20000 bigger than max of 10000"


def _object_info() -> dict[str, Any]:
    return capture(82)["response_body"]


def test_euler_a_suggests_euler_ancestral_from_the_real_sampler_list() -> None:
    samplers = _object_info()["KSampler"]["input"]["required"]["sampler_name"][0]
    assert did_you_mean("euler_a", samplers) == "euler_ancestral"
    assert did_you_mean("Euler", samplers) == "euler"
    assert did_you_mean("dpmpp_2m_k", samplers) in ("dpmpp_2m", "dpmpp_2m_sde")
    assert did_you_mean("zzzz", samplers) is None
    text = not_offered("sampler", "euler_a", samplers)
    assert text.startswith(
        "sampler 'euler_a' is not offered by this ComfyUI; did you mean 'euler_ancestral'? "
        "allowed: euler, euler_cfg_pp, euler_ancestral,"
    )


def test_scheduler_typo_suggests_karras() -> None:
    schedulers = _object_info()["KSampler"]["input"]["required"]["scheduler"][0]
    assert did_you_mean("karas", schedulers) == "karras"
    assert not_offered("scheduler", "foo", schedulers).endswith(
        "allowed: simple, sgm_uniform, karras, exponential, ddim_uniform, beta, normal, linear_quadratic, kl_optimal"
    )
