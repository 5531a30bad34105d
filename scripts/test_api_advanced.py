"""Extended checks from the origin design: `python scripts/test_api_advanced.py --image PATH [--url URL]`.

Runs streaming, multi-turn, two images and the simple endpoints against a running
vlserve and prints a pass/fail summary. Exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from vlserve.tools.client import VLClient, user_message


def checks(client: VLClient, image: str) -> dict[str, Callable[[], str]]:
    def health() -> str:
        body = client.health()
        assert body["status"] == "ok", body
        return f"models {body['models']}"

    def text() -> str:
        return client.chat([user_message("Say hello.")], max_tokens=32)

    def one_image() -> str:
        return client.chat([user_message("What is in this picture?", [image])], max_tokens=32)

    def streaming() -> str:
        pieces = list(client.chat_stream([user_message("Count to five.", [image])], max_tokens=32))
        assert pieces, "no chunks"
        return f"{len(pieces)} chunks: " + "".join(pieces)

    def multi_turn() -> str:
        first = user_message("Describe the image briefly.", [image])
        answer = client.chat([first], max_tokens=32)
        return client.chat([first, {"role": "assistant", "content": answer},
                            user_message("And what colour dominates?")], max_tokens=32)

    def two_images() -> str:
        return client.chat([user_message("Compare these two images.", [image, image])], max_tokens=32)

    def infer() -> str:
        return client.infer("What is this?", image, max_tokens=32)["text"]

    def infer_upload() -> str:
        return client.infer_upload("What is this?", image, max_tokens=32)["text"]

    def analyze() -> str:
        results = [client.analyze(task, image, max_tokens=32, **({"question": "What is it?"} if task == "qa" else {}))
                   for task in ("caption", "ocr", "qa")]
        return "; ".join(f"{r['task']}: {r['text'][:40]!r}" for r in results)

    def analyze_upload() -> str:
        return client.analyze_upload("caption", image, max_tokens=32)["text"]

    def gpu() -> str:
        status = client.gpu_status()
        return f"{status['count']} GPU(s)" if status["available"] else f"no GPU ({status['reason']})"

    return {"health": health, "text": text, "one image": one_image, "streaming": streaming,
            "multi-turn": multi_turn, "two images": two_images, "/infer": infer, "/infer/upload": infer_upload,
            "/analyze": analyze, "/analyze/upload": analyze_upload, "/gpu/status": gpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("VLSERVE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--image", required=True, help="an image file to use in the checks")
    args = parser.parse_args(argv)
    failed = 0
    with VLClient(args.url) as client:
        for name, check in checks(client, args.image).items():
            started = time.perf_counter()
            try:
                detail, ok = check(), True
            except Exception as exc:  # every failure is reported, then the next check runs
                detail, ok = f"{type(exc).__name__}: {exc}", False
            failed += not ok
            ms = (time.perf_counter() - started) * 1000
            print(f"{'PASS' if ok else 'FAIL'}  {name:<16} {ms:7.0f} ms  {str(detail)[:100]!r}")
    total = len(checks(client, args.image))
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
