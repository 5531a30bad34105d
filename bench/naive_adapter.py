"""The origin design's adapter, rebuilt as the baseline for bench/overhead.py: FastAPI in
front of the engine, forwarding with `requests` (a sync route, so each request takes a
thread from the pool), streams relayed line by line, images forwarded as the client sent
them (no validation, no resizing). Not part of vlserve.

    python bench/naive_adapter.py --port 9200 --upstream http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse

import requests
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse


def make_app(upstream: str) -> FastAPI:
    app = FastAPI()
    session = requests.Session()

    @app.get("/v1/models")
    def models() -> dict:
        return session.get(f"{upstream}/v1/models", timeout=10).json()

    @app.post("/v1/chat/completions")
    def chat(body: dict = Body(...)):
        if not body.get("stream"):
            resp = session.post(f"{upstream}/v1/chat/completions", json=body, timeout=600)
            return JSONResponse(resp.json(), status_code=resp.status_code)
        resp = session.post(f"{upstream}/v1/chat/completions", json=body, timeout=600, stream=True)

        def lines():
            for line in resp.iter_lines():
                if line:
                    yield line + b"\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
