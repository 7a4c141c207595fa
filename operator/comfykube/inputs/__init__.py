"""Input images: fetched from a URL, the object store or a file, checked, then uploaded to ComfyUI.

`addresses.py` (which hosts a URL may reach), `fetch.py` (pinned, bounded
http(s) download), `check.py` (magic bytes, full decode, pixel cap),
`prepare.py` (sources of a job → checked files). The upload itself is
`ComfyClient.upload_image`; the pipeline puts the name ComfyUI answers into the graph.
"""

from comfykube.inputs.prepare import (
    FileSource,
    InputLimits,
    PreparedImage,
    Source,
    StoreSource,
    UrlSource,
    prepare_image,
    prepare_images,
    sources_from_spec,
)

__all__ = [
    "FileSource",
    "InputLimits",
    "PreparedImage",
    "Source",
    "StoreSource",
    "UrlSource",
    "prepare_image",
    "prepare_images",
    "sources_from_spec",
]
