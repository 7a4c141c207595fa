"""`comfykube` command line: generate, workflows, workflow init, models, crd, operator, bot, web,
fetch-models, completion.

Exit codes of `generate`: 0 succeeded, 1 the job failed (reason and message
printed), 2 bad input (invalid spec or manifest, unreadable file, bad
configuration, or a checkpoint, sampler or scheduler this ComfyUI does not offer).

`generate --graph` runs a raw API-format graph without ALLOW_RAW_GRAPHS: the
setting protects a shared deployment from its users, while the CLI runs on
the user's own machine against a ComfyUI they chose (docs/workflows.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from comfykube import logsafe
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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
    gen.add_argument(
        "--image", action="append", default=[], metavar="NAME=PATH_OR_URL",
        help="an input image of the workflow: a local file or an http(s) URL (repeatable), e.g. init=photo.png",
    )
    gen.add_argument("--json", action="store_true", help="print the result as an ImageJob status object")
    gen.add_argument(
        "--set", action="append", default=[], dest="set_values", metavar="NAME=VALUE",
        help="a workflow parameter (spec.inputs), typed by the workflow; repeatable",
    )
    gen.add_argument(
        "--graph", type=Path, dest="graph_file", metavar="EXPORTED.json",
        help="run a raw graph saved with ComfyUI's \"Save (API)\" instead of a workflow (local use)",
    )
    gen.add_argument(
        "-o", "--output", dest="output_file", type=Path, metavar="FILE",
        help="also write the image to this file (one image only)",
    )
    show_spec_defaults(gen)

    wfs = sub.add_parser("workflows", help="list the workflows, or show one: parameters, images, fields")
    wfs.add_argument("name", nargs="?", help="one workflow to show in full")
    wfs.add_argument("--json", action="store_true", help="print JSON")
    wfs.add_argument(
        "--check", action="store_true",
        help="check the workflows against the node schemas of a running ComfyUI (/object_info); exit 2 on problems",
    )
    wfs.add_argument("--comfyui-url", help="ComfyUI base URL for --check (default COMFYUI_URL)")

    wf = sub.add_parser("workflow", help="work with workflow files")
    wf_sub = wf.add_subparsers(dest="workflow_command", required=True)
    init = wf_sub.add_parser("init", help="turn a \"Save (API)\" graph into a workflow file (proposed bindings)")
    init.add_argument("graph", type=Path, help="the exported API-format graph (JSON)")
    init.add_argument("-o", "--output", type=Path, help="write the workflow here (default: stdout)")
    init.add_argument("--description", default="", help="the workflow's description")
    add_models_parser(sub)

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
    add_fetch_models_parser(sub)
    add_completion_parser(sub)
    return parser


def add_fetch_models_parser(sub: Any) -> None:
    """`comfykube fetch-models`: the chart's initContainer that fills the ComfyUI models volume."""
    fetch = sub.add_parser("fetch-models", help="download listed models (sha256-checked, resumable) into a folder")
    fetch.add_argument("--manifest", type=Path, required=True, help="JSON list of {path, sha256, url|urlSecretKey}")
    fetch.add_argument("--dest", type=Path, required=True, help="the models folder, e.g. /models")
    fetch.add_argument("--secrets-dir", type=Path, help="mounted Secret with private URLs and headers")
    fetch.add_argument("--attempts", type=int, default=5, help="tries per file, each resuming the last")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a try breaks off")


def package_version() -> str:
    """The installed comfykube's version (pyproject's `version`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comfykube")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def show_spec_defaults(gen: argparse.ArgumentParser) -> None:
    """Append each spec field's default (from the types) to its flag's help: `(default 512)`."""
    by_flag = {FLAG_FOR_FIELD.get(attribute, attribute): info for attribute, info in ImageJobSpec.model_fields.items()}
    for action in gen._actions:
        info = by_flag.get(action.dest)
        if info is None or action.dest == "prompt":
            continue
        text = action.help or (info.description or "").rstrip(".")
        default = info.get_default(call_default_factory=True)
        if default not in (None, "") and "default" not in text:
            text = f"{text} (default {default})" if text else f"default {default}"
        action.help = text.replace("%", "%%")


def add_models_parser(sub: Any) -> None:
    """`comfykube models`: what the ComfyUI offers."""
    models = sub.add_parser("models", help="list the checkpoints, LoRAs, samplers and schedulers ComfyUI offers")
    models.add_argument("--comfyui-url", help="ComfyUI base URL (default COMFYUI_URL, the first of several)")
    models.add_argument("--json", action="store_true", help="print one JSON object")


def add_completion_parser(sub: Any) -> None:
    """`comfykube completion SHELL`: a completion script made from this parser."""
    from comfykube.completion import SHELLS

    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=SHELLS, help="bash: source <(comfykube completion bash)")


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
    logsafe.install([handler])  # no presigned URL in any log line, whoever logs it
    # One line per HTTP request drowns what matters; keep those at debug level.
    for noisy in ("httpx", "httpcore", "kubernetes_asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command == "crd":
        from comfykube.crd import render_crd_yaml

        sys.stdout.write(render_crd_yaml())
        return EXIT_OK
    if args.command == "generate":
        return _generate(args)
    if args.command == "workflows":
        return _workflows(args)
    if args.command == "workflow":
        return _workflow_init(args)
    if args.command == "models":
        return _models(args)
    if args.command == "fetch-models":
        from comfykube.fetch_models import fetch_models

        return fetch_models(args.manifest, args.dest, secrets_dir=args.secrets_dir, timeout=args.timeout,
                            attempts=args.attempts, log=lambda line: print(line, flush=True))
    if args.command == "completion":
        from comfykube.completion import script

        sys.stdout.write(script(args.shell, build_parser()))
        return EXIT_OK
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
    graph_file = getattr(args, "graph_file", None)
    if graph_file is not None:
        try:
            spec["graph"] = json.loads(graph_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidSpec(f"--graph: cannot read {graph_file}: {exc}") from None
        if isinstance(spec["graph"], dict) and isinstance(spec["graph"].get("prompt"), dict):
            spec["graph"] = spec["graph"]["prompt"]  # a saved POST /prompt body
    if "prompt" not in spec:
        raise InvalidSpec("a prompt is required: comfykube generate \"a red fox in the snow\"")
    return spec, name


def apply_set_values(spec: dict[str, Any], values: list[str], workflows: Any) -> None:
    """`--set name=value` into spec.inputs, each typed by the chosen workflow's parameter."""
    if not values:
        return
    if spec.get("graph") is not None:
        raise InvalidSpec("--set: parameters belong to workflows; a raw graph (--graph) has none")
    workflow = workflows.get(str(spec.get("workflow") or ImageJobSpec.model_fields["workflow"].default))
    inputs = dict(spec.get("inputs") or {})
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise InvalidSpec(f"--set {item!r}: expected NAME=VALUE")
        parameter = workflow.parameters.get(name)
        if parameter is None:
            raise InvalidSpec(
                f"--set {name}: workflow {workflow.name!r} has no parameter {name!r}; "
                f"its parameters: {workflow.describe_parameters()}"
            )
        inputs[name] = parameter.parse_text(text)
    spec["inputs"] = inputs


def images_from_args(args: argparse.Namespace) -> tuple[list[dict[str, str]], dict[str, Path]]:
    """`--image name=…` flags: URL entries for spec.images, and local files by name.

    A URL goes into the spec (fetched and checked like any ImageJob's); a file is read
    from disk by the pipeline, checked the same way, and never copied into the spec.
    """
    urls: list[dict[str, str]] = []
    files: dict[str, Path] = {}
    for item in getattr(args, "image", None) or ():
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            raise InvalidSpec(f"--image {item!r}: expected NAME=PATH or NAME=URL, e.g. --image init=photo.png")
        if name in files or any(entry["name"] == name for entry in urls):
            raise InvalidSpec(f"--image {name}: given more than once")
        if where.lower().startswith(("http://", "https://")):
            urls.append({"name": name, "url": where})
            continue
        path = Path(where).expanduser()
        if not path.is_file():
            raise InvalidSpec(f"--image {name}: no such file {where!r}")
        files[name] = path
    return urls, files


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

    overrides: dict[str, Any] = {}
    try:
        if args.comfyui_url:
            overrides["comfyui_url"] = args.comfyui_url
        if args.output_dir:
            overrides["output_dir"] = args.output_dir
        settings = Settings(**overrides)
        raw, name = spec_from_args(args)
        if args.set_values:
            from comfykube.workflows import WorkflowLibrary

            apply_set_values(raw, args.set_values, WorkflowLibrary.from_settings(settings))
        urls, files = images_from_args(args)
        if urls:
            raw["images"] = [*(raw.get("images") or []), *urls]
        spec = parse_spec(raw)
    except ValidationError as exc:
        return _bad_configuration(exc, overrides)
    except (InvalidSpec, WorkflowError) as exc:
        return _fail(args, exc, EXIT_BAD_INPUT)
    if args.output_file is not None and spec.batch_size > 1:
        return _fail(args, InvalidSpec("-o/--output writes one image: use --output-dir with --batch-size > 1"),
                     EXIT_BAD_INPUT)
    known = Known()
    try:
        status = asyncio.run(_run_generate(spec, settings, name, args, known, files))
    except BAD_INPUT_ERRORS as exc:
        return _fail(args, exc, EXIT_BAD_INPUT, known)
    except JobError as exc:
        return _fail(args, exc, EXIT_FAILED, known)
    except KeyboardInterrupt:
        print("comfykube: interrupted", file=sys.stderr)
        return EXIT_FAILED
    if args.output_file is not None:
        _write_output(status, settings, args)
    if args.json:
        print(json.dumps(status.wire(), indent=2))
    else:
        print(f"seed {status.seed}")
        for image in status.images:
            print(f"{image.key}  {image.bytes} bytes  sha256 {image.sha256}")
            print(f"  {image.url}")
        if args.output_file is not None:
            print(f"written to {args.output_file}")
    return EXIT_OK


#: Flags that set a configuration value, for error messages that name what the user typed.
CONFIG_FLAGS = {"comfyui_url": "--comfyui-url", "output_dir": "--output-dir"}


def _bad_configuration(exc: ValidationError, flags_given: Any = ()) -> int:
    """One line naming the flag (for values given as flags) or the environment variable."""
    from comfykube.settings import describe_settings_error

    flags = {field: flag for field, flag in CONFIG_FLAGS.items() if field in flags_given}
    print(f"comfykube: bad configuration: {describe_settings_error(exc, flags)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _copies_dir(settings: Any, args: argparse.Namespace) -> Path | None:
    """Where the pipeline keeps local copies: --output-dir, or a scratch one for -o, with MinIO."""
    if not settings.minio_endpoint:
        return None  # the local store already holds the files
    if args.output_dir:
        return Path(args.output_dir)
    if args.output_file is not None:
        args.scratch = tempfile.TemporaryDirectory(prefix="comfykube-")
        return Path(args.scratch.name)
    return None


def _write_output(status: Any, settings: Any, args: argparse.Namespace) -> None:
    """Copy the one stored (and verified) image to `-o PATH`."""
    (image,) = status.images
    scratch = getattr(args, "scratch", None)
    base = Path(scratch.name) if scratch else _copies_dir(settings, args) or settings.output_dir
    args.output_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base / image.key, args.output_file)
    if scratch:
        scratch.cleanup()


def _models(args: argparse.Namespace) -> int:
    from comfykube.settings import Settings

    overrides = {"comfyui_url": args.comfyui_url} if args.comfyui_url else {}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        return _bad_configuration(exc, overrides)
    try:
        catalog = asyncio.run(_read_catalog(settings.comfyui_urls[0], settings.comfyui_request_timeout))
    except JobError as exc:
        print(f"comfykube: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(catalog.wire(), indent=2))
    else:
        sys.stdout.write(catalog.text())
    return EXIT_OK


async def _read_catalog(url: str, request_timeout: float) -> Any:
    from comfykube.catalog import read_catalog
    from comfykube.comfyui.client import ComfyClient

    async with ComfyClient(url, timeout=request_timeout) as comfy:
        return await read_catalog(comfy)


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
    spec: Any, settings: Any, name: str | None, args: argparse.Namespace, known: Known,
    files: dict[str, Path] | None = None,
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
    if spec.graph is None:
        # Unknown workflow, unused field, bad spec.inputs: bad input, before any network call.
        workflows.get(spec.workflow).validate(spec)
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
            keep_copies_in=_copies_dir(settings, args),
            allow_raw_graphs=True,  # local use: see the module docstring
        )
        # No tenants on one machine: any key of the configured bucket may be an input.
        pipeline.confine_keys_to_namespace = False
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
                    status = await pipeline.run(
                        spec, job, report=report, deadline_at=deadline_at, local_images=files
                    )
            except TimeoutError:
                if known.submissions:
                    await _cancel_quietly(comfy, job.prompt_id)
                raise DeadlineExceeded(f"the job did not finish within {timeout} s") from None
        await pipeline.release(job)
    return status


def _workflows(args: argparse.Namespace) -> int:
    """`comfykube workflows [NAME] [--json]`."""
    from comfykube.settings import Settings
    from comfykube.workflows import WorkflowLibrary

    try:
        settings = Settings(**({"comfyui_url": args.comfyui_url} if args.comfyui_url else {}))
        library = WorkflowLibrary.from_settings(settings)
        chosen = [library.get(args.name)] if args.name else [library.get(n) for n in library.names()]
    except ValidationError as exc:
        print(f"comfykube: bad configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (InvalidSpec, WorkflowError) as exc:
        print(f"comfykube: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.check:
        return _check_workflows(chosen, settings)
    if args.json:
        summaries = [w.summary() for w in chosen]
        print(json.dumps(summaries[0] if args.name else summaries, indent=2, ensure_ascii=False))
        return EXIT_OK
    for workflow in chosen:
        if not args.name:
            print(f"{workflow.name}: {workflow.description}")
            continue
        print(f"{workflow.name}: {workflow.description}")
        print(f"  spec fields: {', '.join(workflow.spec_fields) or 'none (the prompt is only the job title)'}")
        print("  parameters (spec.inputs, --set NAME=VALUE):" if workflow.parameters else "  parameters: none")
        for name, parameter in workflow.parameters.items():
            text = f"    {name}: {parameter.describe()}"
            print(f"{text} — {parameter.description}" if parameter.description else text)
        print("  images (spec.images):" if workflow.images else "  images: none")
        for name, image in workflow.images.items():
            need = "required" if image.required else "optional"
            print(f"    {name} ({need}): {image.description}" if image.description else f"    {name} ({need})")
    return EXIT_OK


def _check_workflows(chosen: list[Any], settings: Any) -> int:
    """Each workflow against the node schemas of the configured ComfyUI: `name: ok` or its problems."""
    from comfykube.comfyui.client import ComfyClient

    async def fetch() -> dict[str, Any]:
        async with ComfyClient(settings.comfyui_urls[0], timeout=settings.comfyui_request_timeout) as comfy:
            return await comfy.node_schemas()

    try:
        schemas = asyncio.run(fetch())
    except JobError as exc:
        print(f"comfykube: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    bad = 0
    for workflow in chosen:
        problems = workflow.check_schema(schemas)
        bad += bool(problems)
        print(f"{workflow.name}: ok" if not problems else f"{workflow.name}:")
        for problem in problems:
            print(f"  {problem}")
    return EXIT_BAD_INPUT if bad else EXIT_OK


def _workflow_init(args: argparse.Namespace) -> int:
    """`comfykube workflow init exported.json [-o FILE]`."""
    from comfykube.workflow_init import propose_workflow
    from comfykube.workflows import load_workflow

    try:
        try:
            graph = json.loads(args.graph.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorkflowError(f"{args.graph}: cannot read graph: {exc}") from None
        target = args.output or Path(args.graph.stem.replace(" ", "_").lower() + ".json")
        document = propose_workflow(graph, description=args.description, path=target)
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text, encoding="utf-8")
            load_workflow(args.output)  # names the file as the library will (and checks its name)
    except WorkflowError as exc:
        print(f"comfykube: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bound = ", ".join(document["bindings"])
    extras = [*document.get("parameters", {}), *document.get("images", {})]
    print(f"comfykube: proposed bindings: {bound}" + (f"; parameters/images: {', '.join(extras)}" if extras else "")
          + ". Review it, then put it in a workflows directory.", file=sys.stderr)
    return EXIT_OK


async def _cancel_quietly(comfy: Any, prompt_id: str) -> None:
    """Cancel a prompt after the deadline; a failure here changes nothing about the outcome."""
    try:
        await comfy.cancel(prompt_id)
    except JobError as exc:
        logging.getLogger(__name__).info("could not cancel prompt %s: %s", prompt_id, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
