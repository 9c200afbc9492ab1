"""`stvg-edge serve` started on a free port and driven with a real HTTP client: the answer equals `run`'s, a second
question on the same video (even renamed) does not track again, bad requests get a 4xx and one line, and an API
key keeps others out."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from stvgr1_edge.cli import main  # noqa: E402
from stvgr1_edge.synth import SynthConfig, write_synthetic_dataset  # noqa: E402

NANO = ["--model", "nano", "--device", "cpu", "--max-new-tokens", "128"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: object | bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_until_up(url: str, proc: subprocess.Popen | None = None, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError("the server did not come up")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("serve")
    annotations = write_synthetic_dataset(root, num=1, seed=31, config=SynthConfig(width=224, height=168, seconds=4.0))
    entry = next(iter(json.loads(annotations.read_text()).values()))
    return root / entry["video_path"], entry["English"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    argv = [sys.executable, "-m", "stvgr1_edge", "serve", *NANO, "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _comparable(query: dict) -> dict:
    return {k: query[k] for k in ("answer_text", "ids", "start_s", "end_s", "tube", "parse_ok")}


def test_the_service_answers_as_run_does_and_tracks_a_video_once(server, clip, tmp_path):
    video, query = clip
    assert main(["run", str(video), query, *NANO, "-o", str(tmp_path / "run.json")]) == 0
    expected = json.loads((tmp_path / "run.json").read_text())

    status, first = _request(server + "/ground", {"video": str(video), "queries": [query]})
    assert status == 200, first
    assert _comparable(first["queries"][0]) == _comparable(expected["queries"][0])
    assert first["num_tracks"] == expected["num_tracks"] and first["config"]["grounder"]["model"] == "nano"
    health = _request(server + "/health")[1]
    assert (health["tracking_runs"], health["track_cache_hits"]) == (1, 0)

    renamed = tmp_path / "same_clip_other_name.mp4"
    shutil.copy(video, renamed)
    status, second = _request(server + "/ground", {"video": str(renamed), "queries": [query, "the small object"]})
    assert status == 200
    assert _comparable(second["queries"][0]) == _comparable(expected["queries"][0])  # replayed tracks: same answer
    assert len(second["queries"]) == 2 and second["timings_ms"]["track"] < first["timings_ms"]["track"]
    health = _request(server + "/health")[1]
    assert (health["tracking_runs"], health["track_cache_hits"], health["answered"]) == (1, 1, 2)

    status, config = _request(server + "/config")
    assert status == 200 and config["tracker"]["name"] == "classical"


@pytest.mark.parametrize(
    "body, status, says",
    [
        (b"{not json", 422, "JSON"),
        ({"video": "x.mp4"}, 422, "queries: Field required"),
        ({"video": "x.mp4", "queries": []}, 422, "queries"),
        ({"video": "x.mp4", "queries": ["q"], "colour": "red"}, 422, "colour"),
        ({"video": "/no/such/video.mp4", "queries": ["q"]}, 400, "video not found on the server"),
        ({"video": "CLIP", "queries": ["   "]}, 400, "query"),
    ],
)
def test_bad_requests_get_a_4xx_with_one_line_and_the_service_goes_on(server, clip, body, status, says):
    if isinstance(body, dict) and body.get("video") == "CLIP":
        body = {**body, "video": str(clip[0])}
    got, reply = _request(server + "/ground", body)
    assert got == status, reply
    assert set(reply) == {"error"} and says in reply["error"] and "\n" not in reply["error"]
    assert _request(server + "/health")[1]["status"] == "ok"


def test_an_api_key_keeps_others_out(clip):
    import uvicorn

    from stvgr1_edge.run_config import RunConfig, build_pipeline
    from stvgr1_edge.serve import GroundingService, create_app

    service = GroundingService(build_pipeline(RunConfig(model="nano", device="cpu", max_new_tokens=64)))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, api_key="s3cret"), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _request(url + "/health")[0] == 401
        assert _request(url + "/health", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert _request(url + "/health", headers={"Authorization": "Bearer s3cret"}) == (200, service.health())
        status, reply = _request(
            url + "/ground", {"video": str(clip[0]), "queries": [clip[1]]}, headers={"X-API-Key": "s3cret"}
        )
        assert status == 200 and reply["queries"][0]["parse_ok"] in (True, False)
        assert service.counts["answered"] == 1
    finally:
        server.should_exit = True
        thread.join(timeout=30)
