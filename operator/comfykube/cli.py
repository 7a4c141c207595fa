"""`comfykube` command line: generate, crd, operator, bot, web.

Exit codes of `generate`: 0 succeeded, 1 the job failed (reason and message
printed), 2 bad input (invalid spec or manifest, unreadable file, bad
configuration, or a checkpoint, sampler or scheduler this ComfyUI does not offer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from comfykube.errors import DeadlineExceeded, InvalidSpec, JobError, PreflightFailed, WorkflowError
from comfykube.types import ImageJobSpec

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: CLI flags whose name is not the spec attribute's; every other scalar spec field is
#: its own flag (`--batch-size` → `batch_size` → `batchSize`), so they cannot drift apart.
FLAG_FOR_FIELD = {"negative_prompt": "negative", "timeout_seconds": "timeout"}
#: A Kubernetes object name (RFC 1123 subdomain): it becomes part of object keys and paths.
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_OBJECT_NAME = 253
#: Errors that mean "the request asks for something that cannot be": bad input, exit 2.
BAD_INPUT_ERRORS = (InvalidSpec, WorkflowError, PreflightFailed)


class ObjectFormatter(logging.Formatter):
    """Prefixes every line logged for a job with `[namespace/name]`.

    kopf's per-object loggers put the object reference into the record; its own
    formatter is not used because we configure logging ourselves.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line, with `[namespace/name]` after the logger name."""
        text = super().format(record)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            where = f"{ref.get('namespace')}/{ref['name']}" if ref.get("namespace") else ref["name"]
            head, sep, tail = text.partition(": ")
            return f"{head}{sep}[{where}] {tail}" if sep else f"[{where}] {text}"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="comfykube", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="render one image without a cluster")
    gen.add_argument("prompt", nargs="?", help="what the picture shows (or give -f)")
    gen.add_argument("-f", "--file", type=Path, help="ImageJob manifest whose spec to use")
    gen.add_argument("--negative", help="negative prompt")
    gen.add_argument("--workflow", help="workflow name from workflows/ (default t2i_basic)")
    gen.add_argument("--model", help="checkpoint file name as ComfyUI lists it")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--cfg", type=float)
    gen.add_argument("--sampler", help="ComfyUI sampler name, e.g. euler_ancestral")
    gen.add_argument("--scheduler", help="ComfyUI scheduler name, e.g. karras")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--batch-size", type=int)
    gen.add_argument("--timeout", type=int, help="deadline in seconds (default DEFAULT_TIMEOUT_SECONDS)")
    gen.add_argument("--comfyui-url", help="ComfyUI base URL (default COMFYUI_URL)")
    gen.add_argument(
        "--output-dir", type=Path,
        help="where images go without MinIO; with MinIO, a local copy of each stored image goes here too",
    )
    gen.add_argument("--json", action="store_true", help="print the result as an ImageJob status object")

    sub.add_parser("crd", help="print the ImageJob CustomResourceDefinition (YAML)")

    op = sub.add_parser("operator", help="run the kopf operator that reconciles ImageJobs")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="namespace to watch")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    op.add_argument(
        "-l", "--selector", default=None,
        help="run only ImageJobs with these labels (a shard, e.g. comfykube.dev/shard=a; env OPERATOR_SELECTOR)",
    )
    op.add_argument("--health-port", type=int, default=8080, help="serves /healthz and /readyz")
    op.add_argument("--metrics-port", type=int, default=9090, help="serves /metrics; 0 disables")

    bot = sub.add_parser("bot", help="run the Discord bot")
    bot.add_argument("--health-port", type=int, default=8081, help="serves /healthz and /readyz")
    bot.add_argument("--metrics-port", type=int, default=9091, help="serves /metrics; 0 disables")
    _add_web_parser(sub)
    return parser


def _add_web_parser(sub: Any) -> None:
    """`comfykube web`: the read-only gallery (settings: WEB_* environment, flags override)."""
    web = sub.add_parser("web", help="serve the read-only web gallery of ImageJobs")
    scope = web.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="namespace to show (WEB_NAMESPACES)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="show every namespace")
    web.add_argument("--host", help="bind address (WEB_HOST, default 127.0.0.1)")
    web.add_argument("--port", type=int, help="port (WEB_PORT, default 8090)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `comfykube` console script."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ObjectFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    # One line per HTTP request drowns what matters; keep those at debug level.
    for noisy in ("httpx", "httpcore", "kubernetes_asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command == "crd":
        from comfykube.crd import render_crd_yaml

        sys.stdout.write(render_crd_yaml())
        return EXIT_OK
    if args.command == "generate":
        return _generate(args)
    if args.command == "operator":
        from comfykube.controller.run import run_operator

        return run_operator(
            namespaces=args.namespace,
            all_namespaces=args.all_namespaces,
            selector=args.selector,
            health_port=args.health_port,
            metrics_port=args.metrics_port,
        )
    if args.command == "web":
        from comfykube_web.app import run_web

        return run_web(args.namespace, args.all_namespaces, args.host, args.port)
    if args.command == "bot":
        from comfykube_bot.main import run_bot

        return run_bot(health_port=args.health_port, metrics_port=args.metrics_port)
    return EXIT_BAD_INPUT


def spec_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The spec dict from `-f` (if any) overlaid with the flags, and the manifest's name."""
    spec: dict[str, Any] = {}
    name = None
    if args.file:
        try:
            doc = yaml.safe_load(args.file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidSpec(f"cannot read {args.file}: not UTF-8 text (byte {exc.start})") from None
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidSpec(f"cannot read {args.file}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
            raise InvalidSpec(f"{args.file}: expected an ImageJob manifest with a spec")
        spec = dict(doc["spec"])
        metadata = doc.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidSpec(f"{args.file}: metadata must be a mapping")
        name = check_object_name((metadata or {}).get("name"), args.file)
    if args.prompt is not None:
        spec["prompt"] = args.prompt
    for attribute, info in ImageJobSpec.model_fields.items():
        value = getattr(args, FLAG_FOR_FIELD.get(attribute, attribute), None)
        if attribute != "prompt" and value is not None:
            spec[info.alias or attribute] = value
    if "prompt" not in spec:
        raise InvalidSpec("a prompt is required: comfykube generate \"a red fox in the snow\"")
    return spec, name


def check_object_name(value: Any, source: Path) -> str | None:
    """`metadata.name` as Kubernetes would accept it (None when absent); InvalidSpec otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSpec(f"{source}: metadata.name must be a string (got {type(value).__name__})")
    shown = repr(value[:40]) + ("…" if len(value) > 40 else "")
    if len(value) > MAX_OBJECT_NAME:
        raise InvalidSpec(f"{source}: metadata.name must be at most {MAX_OBJECT_NAME} characters (got {len(value)})")
    if not OBJECT_NAME.match(value):
        raise InvalidSpec(
            f"{source}: metadata.name {shown} is not a Kubernetes name: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


@dataclass
class Known:
    """What a run learnt before it ended, for a failure's status (as the operator keeps it)."""

    start_time: str | None = None
    prompt_id: str | None = None
    seed: int | None = None
    backend: str | None = None
    submissions: int = 0


def _generate(args: argparse.Namespace) -> int:
    from comfykube.settings import Settings
    from comfykube.types import parse_spec

    try:
        overrides: dict[str, Any] = {}
        if args.comfyui_url:
            overrides["comfyui_url"] = args.comfyui_url
        if args.output_dir:
            overrides["output_dir"] = args.output_dir
        settings = Settings(**overrides)
        raw, name = spec_from_args(args)
        spec = parse_spec(raw)
    except ValidationError as exc:
        print(f"comfykube: bad configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvalidSpec as exc:
        return _fail(args, exc, EXIT_BAD_INPUT)
    known = Known()
    try:
        status = asyncio.run(_run_generate(spec, settings, name, args, known))
    except BAD_INPUT_ERRORS as exc:
        return _fail(args, exc, EXIT_BAD_INPUT, known)
    except JobError as exc:
        return _fail(args, exc, EXIT_FAILED, known)
    except KeyboardInterrupt:
        print("comfykube: interrupted", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(status.wire(), indent=2))
    else:
        for image in status.images:
            print(f"{image.key}  {image.bytes} bytes  sha256 {image.sha256}")
            print(f"  {image.url}")
    return EXIT_OK


def _fail(args: argparse.Namespace, error: JobError, code: int, known: Known | None = None) -> int:
    from comfykube.clock import REAL_CLOCK
    from comfykube.pipeline import failed_status

    if getattr(args, "json", False):
        facts = known or Known()
        status = failed_status(
            error, clock=REAL_CLOCK, start_time=facts.start_time, prompt_id=facts.prompt_id, seed=facts.seed,
            backend=facts.backend, submissions=facts.submissions,
        )
        print(json.dumps(status.wire(), indent=2))
    print(f"comfykube: {error.reason}: {error.message}", file=sys.stderr)
    return code


async def _run_generate(
    spec: Any, settings: Any, name: str | None, args: argparse.Namespace, known: Known
) -> Any:
    from comfykube import tempfiles
    from comfykube.clock import REAL_CLOCK, now_rfc3339
    from comfykube.comfyui.client import ComfyClient
    from comfykube.pipeline import JobIdentity, Pipeline, PipelineEvent
    from comfykube.progress import TerminalProgress
    from comfykube.storage import make_store
    from comfykube.workflows import WorkflowLibrary

    clock = REAL_CLOCK
    uid = str(uuid.uuid4())
    job = JobIdentity(namespace="local", name=name or f"job-{time.strftime('%Y%m%d-%H%M%S')}", uid=uid)
    workflows = WorkflowLibrary.from_settings(settings)
    workflows.get(spec.workflow)  # unknown workflow: bad input, before any network call
    await asyncio.to_thread(tempfiles.sweep)  # downloads a killed run left behind
    timeout = spec.timeout_seconds or settings.default_timeout_seconds
    known.start_time = now_rfc3339(clock)
    deadline_at = clock.now() + timeout
    async with ComfyClient(settings.comfyui_urls[0], timeout=settings.comfyui_request_timeout) as comfy:
        pipeline = Pipeline.from_settings(
            settings,
            comfy=comfy,
            store=make_store(settings),
            workflows=workflows,
            clock=clock,
            keep_copies_in=args.output_dir if settings.minio_endpoint else None,
        )
        with TerminalProgress(enabled=not args.json and sys.stderr.isatty()) as progress:

            async def report(event: PipelineEvent) -> None:
                known.prompt_id = event.prompt_id or known.prompt_id
                known.seed = event.seed if event.seed is not None else known.seed
                known.backend = event.backend or known.backend
                known.submissions = event.submissions if event.submissions is not None else known.submissions
                await progress.report(event)

            try:
                # The deadline covers the whole job, downloads and uploads included.
                async with asyncio.timeout(clock.real_seconds(timeout)):
                    status = await pipeline.run(spec, job, report=report, deadline_at=deadline_at)
            except TimeoutError:
                if known.submissions:
                    await _cancel_quietly(comfy, job.prompt_id)
                raise DeadlineExceeded(f"the job did not finish within {timeout} s") from None
        await pipeline.release(job)
    return status


async def _cancel_quietly(comfy: Any, prompt_id: str) -> None:
    """Cancel a prompt after the deadline; a failure here changes nothing about the outcome."""
    try:
        await comfy.cancel(prompt_id)
    except JobError as exc:
        logging.getLogger(__name__).info("could not cancel prompt %s: %s", prompt_id, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
