"""`stvg-edge serve`: a local HTTP service that loads the model once and answers grounding requests.

    POST /ground   {"video": PATH_OR_URL, "queries": [...], "time_only": false, "multi": false, "id_repair": false}
                   -> the `run -o` result JSON
    GET  /health   -> {"status": "ok", "requests", "tracking_runs", "track_cache_hits", "waiting", ...}
    GET  /config   -> what is loaded (the result's ``config`` without per-request settings)

Requests use the model one at a time, in arrival order (a lock; a second request waits): a GPU holds one 7B model,
and batching videos of different lengths through one prefill does not pay on an edge device. A video's tracks are
kept (up to ``cache_size`` videos) under its content hash, so a second question about the same file -- even under
another name -- skips decoding for tracking and the tracker: only the frames the model sees are decoded again.
Streams and URLs are not cached (their content is not known in advance).

Bad requests get a 4xx status and ``{"error": "<one line>"}``; the service keeps serving. It binds to 127.0.0.1 by
default; bound elsewhere, give it an API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` then).
"""

# No `from __future__ import annotations`: FastAPI reads the request model from the endpoints' real annotations.
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import BadInputError, StvgError, require
from .pipeline import GroundingPipeline
from .tracking.replay import ReplayTracker
from .tracks import TrackSet
from .video import is_url

logger = logging.getLogger(__name__)


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (the track cache's key: renaming or copying a video keeps its tracks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class GroundingService:
    """The model behind the HTTP layer: one request at a time, tracks cached by video content."""

    def __init__(self, pipeline: GroundingPipeline, cache_size: int = 16):
        self.pipeline = pipeline
        self.cache_size = cache_size
        self._tracks: OrderedDict[str, TrackSet] = OrderedDict()
        self._lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.started = time.time()
        self.counts = {"requests": 0, "answered": 0, "failed": 0, "tracking_runs": 0, "track_cache_hits": 0}
        self.waiting = 0

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            **self.counts,
            "waiting": self.waiting,
            "cached_videos": len(self._tracks),
            "uptime_s": round(time.time() - self.started, 1),
        }

    def config(self) -> dict[str, Any]:
        return self.pipeline.describe()

    def ground(self, video: str, queries: list[str], time_only: bool, multi: bool, id_repair: bool) -> dict[str, Any]:
        """The `run` result for one request; :class:`StvgError` for what the request got wrong."""
        with self._counts_lock:
            self.counts["requests"] += 1
            self.waiting += 1
        try:
            key = None
            if not is_url(video):
                path = Path(video)
                if not path.is_file():
                    raise BadInputError(f"video not found on the server: {video}")
                key = file_digest(path)
            with self._lock:  # the model answers one request at a time
                with self._counts_lock:
                    self.waiting -= 1
                result = self._ground_locked(video, key, queries, time_only, multi, id_repair)
        except BaseException:
            with self._counts_lock:
                self.counts["failed"] += 1
            raise
        with self._counts_lock:
            self.counts["answered"] += 1
        return result

    def _ground_locked(
        self, video: str, key: str | None, queries: list[str], time_only: bool, multi: bool, id_repair: bool
    ) -> dict[str, Any]:
        base = self.pipeline
        config = replace(base.config, time_only=time_only, multi_object=multi, id_repair=id_repair)
        tracker = base.tracker
        cached = None if key is None or time_only else self._tracks.get(key)
        if cached is not None:
            tracker = ReplayTracker(cached, source=f"cached tracks of {video}")
            self._tracks.move_to_end(key)  # type: ignore[arg-type]
            self.counts["track_cache_hits"] += 1
        elif not time_only:
            if tracker is None:
                raise BadInputError("this server has no tracker: ask with time_only")
            self.counts["tracking_runs"] += 1
        pipeline = GroundingPipeline(tracker, base.grounder, config, base.description)
        result = pipeline.run(video, queries)
        if key is not None and cached is None and not time_only:
            self._tracks[key] = result.tracks
            while len(self._tracks) > self.cache_size:
                self._tracks.popitem(last=False)
        return result.to_dict()


def create_app(service: GroundingService, api_key: str | None = None) -> Any:
    """The FastAPI application around ``service``; requests need ``api_key`` when it is given."""
    require("fastapi", "serve", "stvg-edge serve")
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class GroundRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        video: str = Field(min_length=1, description="A video path on the server, or a URL FFmpeg can open.")
        queries: list[str] = Field(min_length=1, description="Sentences describing who does what.")
        time_only: bool = False
        multi: bool = False
        id_repair: bool = False

    app = FastAPI(title="stvg-edge", description="Spatio-temporal video grounding (STVG-R1).")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": " ".join(message.split())})

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return error(401, "missing or wrong API key: send Authorization: Bearer KEY or X-API-Key: KEY")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(StvgError)
    async def user_error(_request: Request, exc: StvgError) -> JSONResponse:
        return error(400, str(exc))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    @app.get("/config")
    def config() -> dict[str, Any]:
        return service.config()

    @app.post("/ground")
    def ground(request: GroundRequest) -> dict[str, Any]:  # a plain def: FastAPI runs it in a worker thread
        return service.ground(request.video, request.queries, request.time_only, request.multi, request.id_repair)

    return app


def serve(pipeline: GroundingPipeline, host: str, port: int, api_key: str | None = None, cache_size: int = 16) -> None:
    """Serve until interrupted."""
    require("uvicorn", "serve", "stvg-edge serve")
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach the port can use it", host)
    app = create_app(GroundingService(pipeline, cache_size), api_key)
    uvicorn.run(app, host=host, port=port, log_level="warning")
