"""Configuration from the environment, validated once at start.

A bad value stops the process at start with a message naming the variable,
instead of failing the first job minutes later.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfykube.types import MAX_PRESIGN_SECONDS

if TYPE_CHECKING:
    from comfykube.inputs.prepare import InputLimits


def _shipped_workflows() -> Path:
    """The workflows shipped with comfykube: the checkout's, else the installed data files."""
    checkout = Path(__file__).resolve().parents[2] / "workflows"
    installed = Path(sys.prefix) / "share" / "comfykube" / "workflows"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


#: Where the workflows shipped with the package live (repo checkout or installed data).
DEFAULT_WORKFLOWS_DIR = _shipped_workflows()


#: A list read from one variable: comma-separated text or a JSON array.
GlobList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the pipeline, the operator and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    comfyui_url: str = Field(
        default="http://127.0.0.1:8188",
        description="ComfyUI base URL; several separated by commas form a pool.",
    )
    comfyui_health_retries: int = Field(default=5, ge=0, le=100)
    comfyui_request_timeout: float = Field(default=30.0, gt=0, description="Seconds for one HTTP call.")
    comfyui_poll_interval: float = Field(
        default=2.0, gt=0, description="Seconds between /history polls while following a prompt."
    )
    comfyui_lost_polls: int = Field(
        default=3, ge=1, description="Polls absent from /queue and /history before a prompt counts as lost."
    )

    comfyui_unreachable_grace: float = Field(
        default=60.0, gt=0, description="Seconds a followed backend may not answer before the job moves or retries."
    )
    comfyui_refused_grace: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Seconds a followed backend may refuse every connection (its process is gone) before the job moves; "
            "timeouts keep COMFYUI_UNREACHABLE_GRACE."
        ),
    )

    minio_endpoint: str | None = Field(
        default=None, description="MinIO/S3 as host:port or http(s)://host:port; unset: local store."
    )
    minio_access_key: str | None = None
    minio_secret_key: str | None = None
    minio_bucket: str = Field(default="comfykube", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    minio_secure: bool = False
    minio_region: str | None = None
    minio_public_endpoint: str | None = Field(
        default=None, description="URL people outside the cluster use to reach MinIO (signs presigned URLs)."
    )
    presign_expiry_seconds: int = Field(default=3600, ge=60, le=MAX_PRESIGN_SECONDS)
    output_dir: Path = Field(
        default=Path("comfykube-output"), description="Local store directory when no MinIO is configured."
    )

    workflows_dir: Path = Field(default=DEFAULT_WORKFLOWS_DIR)
    extra_workflows_dir: Path | None = Field(
        default=None, description="More workflows (e.g. a mounted ConfigMap); same names override."
    )
    allow_raw_graphs: bool = Field(
        default=False,
        description="Accept spec.graph (any API-format graph; it can run any node installed on ComfyUI).",
    )
    default_timeout_seconds: int = Field(
        default=600, ge=1, description="Job deadline when spec.timeoutSeconds is not set."
    )

    max_inflight_per_backend: int = Field(
        default=4, ge=1, description="Jobs submitted and not yet stored, per ComfyUI backend (keeps its queue fed)."
    )
    preview_interval_seconds: float = Field(
        default=2.0, ge=0, le=3600,
        description=(
            "Store a running job's latest live preview (a small JPEG beside its images) at most this often; "
            "0: no previews. ComfyUI sends previews only with --preview-method other than none."
        ),
    )
    maintenance_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often finished jobs are checked for TTL and URL refresh."
    )

    comfyui_discovery_service: str | None = Field(
        default=None, description="Discover backends from this Service's EndpointSlices (replaces COMFYUI_URL)."
    )
    comfyui_discovery_namespace: str | None = Field(default=None, description="Namespace of that Service.")
    comfyui_discovery_port: int = Field(default=8188, ge=1, le=65535, description="Port when slices name none.")
    backend_check_interval: float = Field(default=5.0, gt=0, description="Seconds between backend health checks.")
    operator_selector: str | None = Field(
        default=None,
        description=(
            "Label selector of the ImageJobs this operator runs (its shard, e.g. comfykube.dev/shard=a); "
            "unset: all in the watched namespaces. `comfykube operator --selector` overrides it."
        ),
    )

    checkpoint_allow: GlobList = Field(
        default_factory=list, description="Checkpoint globs jobs may use (empty: any); others are refused."
    )
    checkpoint_deny: GlobList = Field(
        default_factory=list, description="Checkpoint globs never used; a spec naming one is refused."
    )
    checkpoint_restricted: GlobList = Field(
        default_factory=list,
        description="Checkpoint globs used only when a spec names them, never as a fallback (e.g. NSFW ones).",
    )

    @field_validator("checkpoint_allow", "checkpoint_deny", "checkpoint_restricted", mode="before")
    @classmethod
    def _glob_list(cls, value: Any) -> list[str]:
        return split_list(value)

    input_image_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest input image (spec.images) accepted, in bytes."
    )
    input_image_max_pixels: int = Field(
        default=4096 * 4096, ge=64 * 64, description="Largest input image accepted, in pixels (width x height)."
    )
    input_url_allow_private: bool = Field(
        default=False,
        description="Let input URLs reach loopback, private, link-local and metadata addresses (trusted setups).",
    )
    input_url_timeout_seconds: float = Field(default=30.0, gt=0, description="Seconds for one input URL request.")
    input_url_max_redirects: int = Field(default=5, ge=0, le=20, description="Redirects followed per input URL.")
    from_job_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Seconds after its creation a job waits for an ImageJob its spec.images[].fromJob names to exist "
            "(kubectl apply of a chain may create it later); then it fails with InvalidSpec."
        ),
    )

    @field_validator("comfyui_url")
    @classmethod
    def _urls_are_absolute(cls, value: str) -> str:
        # `host:port` means `http://host:port`, as MINIO_ENDPOINT takes both forms too.
        urls = [url if "://" in url else f"http://{url}" for url in split_urls(value)]
        if not urls:
            raise ValueError("must name at least one ComfyUI, e.g. http://127.0.0.1:8188")
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("each entry must be host:port or an http(s):// URL, e.g. http://127.0.0.1:8188")
            try:
                parts.port  # noqa: B018 - raises on a port that is not a number
            except ValueError:
                raise ValueError("the port must be a number, e.g. http://127.0.0.1:8188") from None
        return ",".join(urls)

    @field_validator("minio_endpoint")
    @classmethod
    def _endpoint_is_host_port(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        url = value.strip() if "://" in value else f"http://{value.strip()}"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be host:port or http(s)://host:port without a path, e.g. minio:9000")
        return value.strip()

    @field_validator("operator_selector")
    @classmethod
    def _selector_parses(cls, value: str | None) -> str | None:
        from comfykube.controller.shard import Selector  # no dependencies: no import cycle

        Selector.parse(value)
        return value

    @field_validator("minio_public_endpoint")
    @classmethod
    def _public_endpoint_is_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be a URL such as https://images.example.com")
        return value

    def input_limits(self) -> InputLimits:
        """The input image rules the pipeline applies."""
        from comfykube.inputs.prepare import InputLimits

        return InputLimits(
            max_bytes=self.input_image_max_bytes,
            max_pixels=self.input_image_max_pixels,
            allow_private=self.input_url_allow_private,
            url_timeout=self.input_url_timeout_seconds,
            max_redirects=self.input_url_max_redirects,
        )

    @property
    def comfyui_urls(self) -> list[str]:
        """The configured ComfyUI backends, without trailing slashes."""
        return split_urls(self.comfyui_url)


def split_urls(value: str) -> list[str]:
    """`"http://a:8188/, http://b:8188"` → `["http://a:8188", "http://b:8188"]`."""
    return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]


def split_list(value: Any) -> list[str]:
    """`"a*, b"` → `["a*", "b"]`; a JSON array is read as one; lists pass through."""
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise ValueError("expected a JSON array")
        return [str(v).strip() for v in parsed if str(v).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


#: Settings whose values are never echoed in an error message.
_SECRET_FIELDS = frozenset({"minio_access_key", "minio_secret_key"})


def describe_settings_error(error: ValidationError, flags: dict[str, str] | None = None) -> str:
    """One line per bad setting: `COMFYUI_URL='x': must be ...`, naming the flag when one was used.

    `flags` maps a field to the command-line flag that set it (`{"comfyui_url": "--comfyui-url"}`);
    without an entry the field is named by its environment variable. No pydantic dump, no link.
    """
    lines = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item.get("loc") else ""
        name = (flags or {}).get(field) or field.upper() or "configuration"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        message = message[0].lower() + message[1:] if message else "invalid"
        if field in _SECRET_FIELDS or "input" not in item or not isinstance(item["input"], str | int | float):
            lines.append(f"{name}: {message}")
        else:
            lines.append(f"{name}={item['input']!r}: {message}")
    return "; ".join(lines)
