"""Where model weights come from: a local folder, the local hub cache, or (once) the Hugging Face Hub.

Every model loader (grounder, SAM2/EdgeTAM, detectors) asks :func:`hub_source` before calling
``from_pretrained`` with a hub id. A cached model then loads with ``local_files_only=True`` (no network
round trips at all, which matters on an edge box), and a model that is neither cached nor reachable fails
at once with one line saying how to get it — instead of minutes of retried HTTP requests.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from .errors import MissingWeightsError


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def is_cached(repo_id: str) -> bool:
    """Whether ``repo_id``'s ``config.json`` is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(hit, str)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP connect to the Hub endpoint (``HF_ENDPOINT`` respected); no request is sent."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_source(repo_id: str, how_to_get: str) -> tuple[str, bool]:
    """``(repo_id, local_files_only)`` for a hub id, or :class:`MissingWeightsError` with ``how_to_get``.

    Cached → load locally without touching the network. Not cached → download, if the Hub can be reached.
    """
    if is_cached(repo_id):
        return repo_id, True
    if hub_offline():
        raise MissingWeightsError(
            f"'{repo_id}' is not in the local model cache and HF_HUB_OFFLINE is set: {how_to_get}"
        )
    if not hub_reachable():
        raise MissingWeightsError(
            f"'{repo_id}' is not in the local model cache and the Hub cannot be reached: {how_to_get}"
        )
    return repo_id, False
