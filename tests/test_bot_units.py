"""Pure unit tests of the bot: inline flags, options → spec, policy, rendering, the edit throttle."""

from __future__ import annotations

import ast
import datetime as dt
import io
import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from comfykube.readback import read_spec, read_status
from comfykube.types import Phase
from comfykube_bot.flags import FlagError, parse_inline_flags
from comfykube_bot.images import reencode_preview
from comfykube_bot.jobs import Delivery, JobInfo
from comfykube_bot.policy import Caller, Policy
from comfykube_bot.render import (
    custom_id,
    final_marker,
    parse_custom_id,
    progress_bar,
    render_final,
    render_job_list,
    render_progress,
    render_queue,
    status_line,
)
from comfykube_bot.settings import BotSettings
from comfykube_bot.signing import Signer
from comfykube_bot.specs import (
    ImagineOptions,
    OptionError,
    Origin,
    build_manifest,
    build_spec,
    reroll_spec,
    size_for_aspect,
)
from comfykube_bot.updater import Throttle

GUILD, GENERAL, NSFW, ARTIST, MOD = 10**17 + 1, 10**17 + 2, 10**17 + 3, 10**17 + 4, 10**17 + 5


def settings(**overrides: object) -> BotSettings:
    return BotSettings(discord_token="t", **overrides)  # type: ignore[arg-type]


def job(phase: str | None = None, name: str = "ij-1", **status: object) -> JobInfo:
    st: dict[str, object] = dict(status)
    if phase:
        st["phase"] = phase
    return JobInfo(
        namespace="default", name=name, uid="u", resource_version="1",
        spec=read_spec({"prompt": "a red fox in snow", "width": 512, "height": 512, "steps": 20, "cfg": 7.0,
                        "seed": 5}),
        status=read_status(st),
        labels={"comfykube.dev/requester": "42", "app.kubernetes.io/managed-by": "comfykube-bot"},
        annotations={"comfykube.dev/discord-channel": "7", "comfykube.dev/discord-message": "8"},
    )


# ----------------------------------------------------------------------------- flags


def test_inline_flags_become_options_and_leave_the_text() -> None:
    parsed = parse_inline_flags("a cat on a roof --ar 16:9 --seed 42 --no text, watermark --steps 30 --cfg 6.5")
    assert parsed.text == "a cat on a roof"
    assert parsed.options == {"aspect": "16:9", "seed": 42, "negative": "text, watermark", "steps": 30, "cfg": 6.5}


def test_prompt_without_flags_is_kept_byte_for_byte() -> None:
    assert parse_inline_flags("  line one\nline  two ").text == "line one\nline  two"


def test_phone_dashes_count_as_flags_and_repeated_no_joins() -> None:
    parsed = parse_inline_flags("fox —ar 3:2 --no blur --no text")
    assert parsed.options == {"aspect": "3:2", "negative": "blur, text"}


@pytest.mark.parametrize(
    ("prompt", "flag", "needle"),
    [
        ("cat --sed 42", "sed", "unknown flag --sed"),
        ("cat --seed", "seed", "needs a value"),
        ("cat --seed forty", "seed", "whole number"),
        ("cat --ar wide", "ar", "ratio"),
        ("cat --cfg nan", "cfg", "finite"),
        ("cat --no", "no", "needs"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(prompt: str, flag: str, needle: str) -> None:
    with pytest.raises(FlagError) as info:
        parse_inline_flags(prompt)
    assert info.value.flag == flag
    assert needle in info.value.message


# ----------------------------------------------------------------------------- specs


def test_typed_options_win_over_inline_flags_and_negative_is_joined() -> None:
    parsed = parse_inline_flags("cat --steps 10 --no blur")
    merged = ImagineOptions(prompt="x", steps=30, negative="text").merged_with_flags(parsed.options, parsed.text)
    spec = build_spec(merged)
    assert (spec.steps, spec.negative_prompt, spec.prompt) == (30, "text, blur", "cat")


def test_aspect_keeps_the_area_in_multiples_of_64() -> None:
    assert size_for_aspect("1:1", 512) == (512, 512)
    assert size_for_aspect("16:9", 512) == (704, 384)
    assert size_for_aspect("9:16", 1024) == (768, 1344)
    spec = build_spec(ImagineOptions(prompt="x", aspect="2:1", width=1024))
    assert (spec.width, spec.height) == (1024, 512)


@pytest.mark.parametrize(
    ("options", "option", "text"),
    [
        (ImagineOptions(prompt="x", steps=500), "steps", "between 1 and 150 (got 500)"),
        (ImagineOptions(prompt="x", width=513, height=512), "width", "multiple of 8 from 64 to 2048"),
        (ImagineOptions(prompt="x", cfg=31.0), "cfg", "between 0 and 30"),
        (ImagineOptions(prompt="x", count=5), "count", "between 1 and 4"),
        (ImagineOptions(prompt="x", aspect="10:1"), "aspect", "between 1:4 and 4:1"),
        (ImagineOptions(prompt="   "), "prompt", "only white space"),
    ],
)
def test_bad_options_name_the_option_and_the_allowed_range(options: ImagineOptions, option: str, text: str) -> None:
    with pytest.raises(OptionError) as info:
        build_spec(options)
    assert info.value.option == option
    assert f"`{option}`" in info.value.message and text in info.value.message


def test_manifest_carries_labels_and_annotations_the_operator_and_bot_need() -> None:
    spec = build_spec(ImagineOptions(prompt="cat", count=2))
    body = build_manifest(spec, "ij-9", Origin(user_id=42, guild_id=GUILD, channel_id=GENERAL, message_id=77,
                                               interaction_id=9, upload_limit=1000, spoiler=True))
    assert body["metadata"]["labels"] == {
        "comfykube.dev/requester": "42", "comfykube.dev/guild": str(GUILD), "comfykube.dev/channel": str(GENERAL),
        "app.kubernetes.io/managed-by": "comfykube-bot",
    }
    ann = body["metadata"]["annotations"]
    assert ann["comfykube.dev/discord-channel"] == str(GENERAL) and ann["comfykube.dev/discord-message"] == "77"
    assert ann["comfykube.dev/discord-spoiler"] == "true"
    assert body["spec"]["batchSize"] == 2


def test_the_private_annotation_is_signed_without_breaking_older_signatures() -> None:
    signer = Signer(b"k" * 32)
    origin = Origin(user_id=42, guild_id=7, channel_id=8, message_id=9, interaction_id=10)
    spec = build_spec(ImagineOptions(prompt="cat"))
    public = build_manifest(spec, "ij-10", origin, signer=signer)["metadata"]
    private = build_manifest(spec, "ij-10", replace(origin, private=True), signer=signer)["metadata"]
    assert "comfykube.dev/discord-private" not in public["annotations"]
    assert private["annotations"]["comfykube.dev/discord-private"] == "true"
    # A public job's signature is byte for byte what the bot wrote before the annotation existed
    # (this value was made by the signing code of that time): jobs in flight across the upgrade stay bot jobs.
    assert public["annotations"]["comfykube.dev/discord-signature"] == \
        "v1:e8f987720e12e76c7c560ce3d437d24d904c51e1cc713285998e8fe066d62ce0"

    def read(meta: dict[str, object]) -> JobInfo:
        return JobInfo.from_obj({"metadata": {**meta, "namespace": "default"}, "spec": spec.wire()}, signer)

    assert read(public).verified and not read(public).private
    assert read(private).verified and read(private).private
    assert private["annotations"]["comfykube.dev/discord-signature"] != \
        public["annotations"]["comfykube.dev/discord-signature"]
    # Removing the annotation (to make a private result public) or changing it breaks the signature: the job
    # becomes a kubectl job, whose job message the bot no longer touches.
    for value in (None, "false", "TRUE"):
        annotations = {k: v for k, v in private["annotations"].items() if k != "comfykube.dev/discord-private"}
        if value is not None:
            annotations["comfykube.dev/discord-private"] = value
        forged = read({**private, "annotations": annotations})
        assert not forged.verified and forged.message_id is None and not forged.private, value
    # Added to an older (public) job with its old signature: not honoured either.
    added = read({**public, "annotations": {**public["annotations"], "comfykube.dev/discord-private": "true"}})
    assert not added.verified and not added.private and added.message_id is None


def test_reroll_keeps_the_spec_with_a_new_seed_and_drops_notify() -> None:
    spec = read_spec({"prompt": "cat", "seed": 5, "steps": 12, "notify": {"discord": {"channelId": str(GENERAL)}}})
    seeds = {reroll_spec(spec).seed for _ in range(5)}
    new = reroll_spec(spec)
    assert new.steps == 12 and new.notify is None and 5 not in seeds and len(seeds) > 1


# ----------------------------------------------------------------------------- settings


def test_settings_read_comma_lists_and_json_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "secret")
    monkeypatch.setenv("BOT_ALLOWED_GUILDS", f"{GUILD}, {GUILD + 1}")
    monkeypatch.setenv("BOT_ALLOWED_CHANNELS", "")
    monkeypatch.setenv("BOT_DENY_PATTERNS", r'["gore", "bl(oo|ee)d{1,2}"]')
    monkeypatch.setenv("BOT_NSFW_MODELS", "*nsfw*,pony*")
    s = BotSettings()  # type: ignore[call-arg]
    assert s.bot_allowed_guilds == [GUILD, GUILD + 1] and s.bot_allowed_channels == []
    assert s.bot_deny_patterns == ["gore", "bl(oo|ee)d{1,2}"] and s.bot_nsfw_models == ["*nsfw*", "pony*"]
    assert "secret" not in repr(s)


def test_settings_refuse_a_bad_id_or_regex() -> None:
    with pytest.raises(ValueError, match="not a Discord id"):
        settings(bot_allowed_guilds="12ab")
    with pytest.raises(ValueError, match="not a regular expression"):
        settings(bot_deny_patterns="(unclosed")


# ----------------------------------------------------------------------------- policy


def caller(**kw: object) -> Caller:
    values: dict[str, object] = {"user_id": 42, "guild_id": GUILD, "channel_id": GENERAL}
    values.update(kw)
    return Caller(**values)  # type: ignore[arg-type]


def test_allow_lists_refuse_other_guilds_channels_and_roles() -> None:
    policy = Policy(settings(bot_allowed_guilds=str(GUILD), bot_allowed_channels=str(GENERAL),
                             bot_allowed_roles=str(ARTIST), bot_moderator_roles=str(MOD)))
    assert policy.check_access(caller(role_ids=frozenset({ARTIST}))) is None
    assert policy.check_access(caller(guild_id=GUILD + 9, role_ids=frozenset({ARTIST}))).reason == "GuildNotAllowed"
    assert policy.check_access(caller(channel_id=NSFW, role_ids=frozenset({ARTIST}))).reason == "ChannelNotAllowed"
    assert policy.check_access(caller()).reason == "RoleNotAllowed"
    assert policy.check_access(caller(role_ids=frozenset({MOD}))) is None  # moderators pass the role list


def test_direct_messages_are_off_unless_enabled() -> None:
    assert Policy(settings()).check_access(caller(guild_id=None)).reason == "DirectMessagesOff"
    assert Policy(settings(bot_allow_dms=True)).check_access(caller(guild_id=None)) is None


def test_deny_list_names_the_term_and_ignores_case() -> None:
    policy = Policy(settings(bot_deny_patterns="gore,\\bbl(oo)d\\b"))
    refusal = policy.check_prompt("A lot of BLOOD everywhere")
    assert refusal is not None and refusal.reason == "PromptDenied" and "BLOOD" in refusal.message
    assert policy.check_prompt("a bloody mary cocktail") is None


def test_nsfw_models_only_in_nsfw_channels() -> None:
    policy = Policy(settings(bot_nsfw_models="*nsfw*,pony*"))
    assert policy.check_model("sdxl-NSFW-v2.safetensors", caller()).reason == "NsfwModel"
    assert policy.check_model("sub/pony-xl.safetensors", caller()).reason == "NsfwModel"
    assert policy.check_model("pony-xl.safetensors", caller(channel_nsfw=True)) is None
    assert policy.check_model("sd15.safetensors", caller()) is None
    assert policy.visible_models(["a.ckpt", "nsfw.ckpt"], caller()) == ["a.ckpt"]


def test_limits_cooldown_active_jobs_and_queue_cap() -> None:
    policy = Policy(settings(bot_max_active_jobs=2, bot_cooldown_seconds=30, bot_queue_cap=5))
    assert policy.check_cooldown(None) is None and policy.check_cooldown(31) is None
    refusal = policy.check_cooldown(10)
    assert refusal is not None and refusal.reason == "Cooldown" and "20 s" in refusal.message
    assert policy.check_quota(1, 4) is None
    assert policy.check_quota(2, 0).reason == "TooManyActiveJobs"
    assert policy.check_quota(0, 5).reason == "QueueFull"


def test_cancel_is_for_the_owner_and_delete_also_for_moderators() -> None:
    policy = Policy(settings(bot_moderator_roles=str(MOD)))
    assert policy.may_cancel(caller(user_id=42), 42) is None
    assert policy.may_cancel(caller(user_id=43, role_ids=frozenset({MOD})), 42).reason == "NotOwner"
    assert policy.may_delete(caller(user_id=43, role_ids=frozenset({MOD})), 42) is None
    assert policy.may_delete(caller(user_id=43, manage_messages=True), 42) is None
    assert policy.may_delete(caller(user_id=43), 42).reason == "NotOwner"


# ----------------------------------------------------------------------------- render


def test_progress_bar_and_status_lines_for_each_phase() -> None:
    assert progress_bar(5, 10, width=10) == "█████░░░░░"
    assert progress_bar(50, 10, width=4) == "████" and progress_bar(1, 0, width=3) == "░░░"
    assert "position 3 (2 ahead)" in status_line(job("Queued", queuePosition=2))
    assert "step 12/20 · 60%" in status_line(job("Running", progress={"value": 12, "max": 20}))
    assert "Uploading" in status_line(job("Uploading"))
    done = job("Succeeded", startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:09:12Z")
    assert status_line(done) == "✅ **Done** in 9 min 12 s"


def test_failure_shows_reason_and_first_line_of_the_message_never_a_traceback() -> None:
    failed = job("Failed", reason="PreflightFailed",
                 message="checkpoint 'nope.safetensors' is not offered; available: a.safetensors\nTraceback (most")
    text = status_line(failed)
    assert "PreflightFailed: checkpoint 'nope.safetensors' is not offered; available: a.safetensors" in text
    assert "Traceback" not in text


def test_progress_message_has_cancel_and_final_message_has_result_buttons() -> None:
    running = render_progress(job("Running"))
    assert [b.custom_id for b in running.buttons] == ["ij:cancel:default/ij-1"]
    expires = "2026-01-01T01:00:00Z"
    done = job("Succeeded", images=[{"key": "k", "bytes": 1, "sha256": "0" * 64, "contentType": "image/png",
                                            "url": "https://s3/x?sig", "urlExpiresAt": expires}], seed=99)
    final = render_final(done)
    assert final.buttons[0].url == "https://s3/x?sig" and "01 Jan 01:00 UTC" in final.buttons[0].label
    assert [b.custom_id for b in final.buttons[1:]] == [
        "ij:link:default/ij-1", "ij:reroll:default/ij-1", "ij:delete:default/ij-1"]
    embed = final.embeds[0]
    assert embed["footer"]["text"] == final_marker(done) == "default/ij-1 · Succeeded"
    assert {"name": "Seed", "value": "`99`", "inline": True} in embed["fields"]
    assert final.content.startswith("<@42> ✅")


def test_custom_ids_round_trip_and_never_exceed_100_characters() -> None:
    assert parse_custom_id(custom_id("reroll", "default", "ij-1") or "") == ("reroll", "default", "ij-1")
    assert custom_id("cancel", "n" * 40, "x" * 60) is None
    assert parse_custom_id("other:thing") is None
    long_job = job("Failed", name="x" * 90)
    assert render_final(long_job).buttons == ()  # no button rather than an invalid one


def test_lists_stay_within_discord_content_limit() -> None:
    many = [job("Queued", name=f"ij-{i}", queuePosition=i) for i in range(200)]
    assert len(render_queue(many, cap=20)) <= 2000 and "more" in render_queue(many, cap=20)
    assert len(render_job_list(many, GUILD, title="t", empty="e")) <= 2000


def test_a_private_job_shows_no_prompt_in_the_queue_and_no_message_link_in_jobs() -> None:
    public, private = job("Queued", name="ij-1"), job("Queued", name="ij-2")
    private.annotations["comfykube.dev/discord-private"] = "true"
    queue = render_queue([public, private], cap=20)
    assert queue.count("a red fox in snow") == 1 and "`ij-2` Queued · <@42> · 🔒 private" in queue
    listed = render_job_list([public, private], GUILD, title="t", empty="e").splitlines()
    assert "[message](" in listed[1] and "[message](" not in listed[2]


# ----------------------------------------------------------------------------- throttle (fake clock)


def test_throttle_sends_first_state_at_once_then_at_most_one_per_interval() -> None:
    throttle = Throttle(2.0)
    assert throttle.offer("m", "s1", now=100.0) == 0.0
    assert throttle.take("m", now=100.0) == "s1"
    assert throttle.offer("m", "s2", now=100.5) == pytest.approx(1.5)
    assert throttle.offer("m", "s3", now=101.0) is None  # coalesced into the scheduled send
    assert throttle.offer("m", "s4", now=101.9) is None
    assert throttle.take("m", now=102.0) == "s4"  # only the newest state goes out
    assert throttle.coalesced == 2
    assert throttle.offer("m", "s5", now=110.0) == 0.0  # quiet for long: no wait


def test_throttle_simulated_job_sends_at_most_one_edit_per_interval() -> None:
    throttle, now, sent, due = Throttle(2.0), 0.0, [], None
    for step in range(200):  # a progress event every 50 ms for 10 s
        now = step * 0.05
        if due is not None and now >= due:
            sent.append((now, throttle.take("m", now)))
            due = None
        delay = throttle.offer("m", f"step {step}", now)
        if delay is not None:
            due = now + delay
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert len(sent) <= 6 and all(g >= 2.0 - 1e-9 for g in gaps)


def test_final_state_is_sticky() -> None:
    throttle = Throttle(2.0)
    throttle.offer("m", "progress", 0.0)
    throttle.take("m", 0.0)
    assert throttle.offer("m", "result", 0.5, final=True) == pytest.approx(1.5)
    assert throttle.offer("m", "late progress", 0.6) is None
    assert throttle.take("m", 2.0) == "result"


# ----------------------------------------------------------------------------- delivery record, preview


def test_delivery_annotation_round_trip() -> None:
    assert Delivery.parse(None).state == "none"
    claim = Delivery.parse(Delivery.claim_value("pod-a", now=1000))
    assert (claim.state, claim.holder, claim.at) == ("claimed", "pod-a", 1000.0)
    done = Delivery.parse(Delivery.record_value(555, now=1001))
    assert (done.state, done.message_id) == ("done", 555)
    assert Delivery.parse("something odd").state == "done"  # unreadable: never post twice


def test_preview_reencode_fits_the_budget() -> None:
    noisy = Image.effect_noise((1024, 1024), 90).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    big = buf.getvalue()
    preview = reencode_preview(big, 150_000)
    assert preview is not None and len(preview) <= 150_000 < len(big)
    assert Image.open(io.BytesIO(preview)).format == "JPEG"


def test_job_info_reads_phase_and_delivery_defensively() -> None:
    info = JobInfo.from_obj({"metadata": {"name": "a", "namespace": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
                             "status": {"phase": "Bogus"}})
    assert info.phase is Phase.PENDING and info.created_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert not info.wants_discord


def test_run_bot_exits_2_with_a_readable_message_on_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from comfykube_bot.main import run_bot

    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("BOT_MAX_ACTIVE_JOBS", "0")
    assert run_bot(health_port=0, metrics_port=0) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN" in err and "BOT_MAX_ACTIVE_JOBS" in err


BOT_PACKAGE = Path(__file__).resolve().parent.parent / "bot" / "comfykube_bot"


def _annotations(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            found += [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                      if x is not None and x.annotation is not None]
            found += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def reaches_back(source: str) -> list[str]:
    """Where a module imports `comfykube_bot.main` or names `ComfyBot` (in code or annotations, not in prose)."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name == "comfykube_bot.main" or a.name.startswith("comfykube_bot.main.")]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = {a.name for a in node.names}
            if module in ("comfykube_bot.main", ".main") or (module in ("comfykube_bot", ".") and "main" in names):
                found.append(f"line {node.lineno}: from {module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Name) and node.id == "ComfyBot":
            found.append(f"line {node.lineno}: name ComfyBot")
        elif isinstance(node, ast.Attribute) and node.attr == "ComfyBot":
            found.append(f"line {node.lineno}: attribute ComfyBot")
    # String annotations ("ComfyBot") are forward references too.
    found += [f"line {a.lineno}: annotation {ast.unparse(a)}" for a in _annotations(tree)
              if any(isinstance(c, ast.Constant) and "ComfyBot" in str(c.value) for c in ast.walk(a))]
    return found


def test_no_bot_module_reaches_back_to_comfybot() -> None:
    # The checker itself sees each way back (so a pass below means something).
    for sample in (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from comfykube_bot.main import ComfyBot\n",
        "from .main import ComfyBot\n",
        "from comfykube_bot import main\n",
        "import comfykube_bot.main\n",
        "def f(bot: 'ComfyBot') -> None: ...\n",
        "class A:\n    bot: list['ComfyBot']\n",
        "import comfykube_bot.main as m\nx: m.ComfyBot\n",
    ):
        assert reaches_back(sample), sample
    assert reaches_back('"""The parts are wired by `main.ComfyBot` (see its docstring)."""\n') == []

    modules = sorted(p for p in BOT_PACKAGE.glob("*.py") if p.name != "main.py")
    assert len(modules) > 10, f"bot modules not found under {BOT_PACKAGE}"
    offenders = {p.name: hits for p in modules if (hits := reaches_back(p.read_text(encoding="utf-8")))}
    assert offenders == {}, "only main.py may know ComfyBot; give the part its dependencies instead"


def test_modal_submissions_are_read_as_untrusted_input() -> None:
    from comfykube_bot.derive import parse_remix_modal_id, remix_modal_id
    from comfykube_bot.modals import submitted_values

    payload = {"custom_id": "rxm:default/ij-1", "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "prompt", "value": "a wolf"}]},
        {"type": 18, "component": {"type": 4, "custom_id": "seed", "value": "5"}},  # a label (newer modals)
        {"type": 1, "components": [{"type": 4, "custom_id": "negative", "value": 7}]},  # not text: skipped
        "junk", {"type": 1, "components": "junk"}, {"type": 1, "components": [None, {"custom_id": "x" * 101,
                                                                                     "value": "too long an id"}]},
    ]}
    assert submitted_values(payload) == {"prompt": "a wolf", "seed": "5"}
    assert submitted_values(None) == {} and submitted_values({"components": {"a": 1}}) == {}

    assert remix_modal_id("default", "ij-1") == "rxm:default/ij-1"
    assert parse_remix_modal_id("rxm:default/ij-1") == ("default", "ij-1")
    for forged in ("rxm:default/ij-1/x", "rxm:Default/ij-1", "rxm:default/", "rxm:/ij-1", " rxm:default/ij-1",
                   "rx-modal:ij-1", "rxm:default/ij_1", "rxm:default/" + "a" * 100, None, 5):
        assert parse_remix_modal_id(forged) is None, forged
    # Any name the grid's `ig:rx:<i>:` id can carry fits in a modal id (both capped at 100 characters).
    longest = "n" * (100 - len("ig:rx:0:default/"))
    assert remix_modal_id("default", longest) is not None
