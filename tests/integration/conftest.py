"""Integration fixtures: a LocalEngine gateway, an UpstreamEngine gateway in front of it,
and an image server, all real processes/servers on 127.0.0.1."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from PIL import Image

from ..servers import ServerProcess

TEST_MEDIA_ENV = {"MEDIA_ALLOW_PRIVATE_HOSTS": "127.0.0.1"}
KEYS = ("sk-first-key", "sk-second-key")


def png_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 48)) -> bytes:
    """A photo-like JPEG: a gradient, so it compresses like a picture, not a flat colour."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def local_server(tiny_model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    server = ServerProcess({"MODEL_PATH": str(tiny_model_dir), "SERVED_MODEL_NAME": "tiny",
                            "VLSERVE_CACHE_DIR": str(logs), **TEST_MEDIA_ENV}, logs, "local").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def upstream_server(local_server, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    server = ServerProcess({"UPSTREAM_BASE_URL": local_server.url, "SERVED_MODEL_NAME": "alias-model",
                            **TEST_MEDIA_ENV}, logs, "upstream").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def secured(tiny_model_dir, tmp_path_factory):
    """A local gateway with API keys: KEYS[0] from API_KEYS, KEYS[1] from API_KEYS_FILE."""
    logs = tmp_path_factory.mktemp("auth")
    keys_file = logs / "keys.txt"
    keys_file.write_text(f"# one per line\n{KEYS[1]}\n")
    server = ServerProcess({"MODEL_PATH": str(tiny_model_dir), "API_KEYS": KEYS[0],
                            "API_KEYS_FILE": str(keys_file)}, logs, "secured").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture(params=["local", "upstream"])
def gateway(request) -> ServerProcess:
    """Each test runs against the LocalEngine gateway and the UpstreamEngine gateway."""
    return request.getfixturevalue(f"{request.param}_server")


class _ImageHandler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {}

    def do_GET(self):
        status, ctype, body = self.routes.get(self.path, (404, "text/plain", b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def image_server():
    """An HTTP server on 127.0.0.1 serving a PNG at /red.png and text at /text.png."""
    _ImageHandler.routes = {"/red.png": (200, "image/png", png_bytes()),
                            "/text.png": (200, "image/png", b"this is not an image")}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
