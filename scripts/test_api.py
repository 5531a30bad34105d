"""Smoke test from the origin design: `python scripts/test_api.py [--image PATH] [--url URL]`.

Asks the running vlserve one text question, or one question about an image, and prints
the answer. Exits non-zero if the request fails.
"""

from __future__ import annotations

import argparse
import os
import sys

from vlserve.tools.client import VLClient, user_message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("VLSERVE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--image", help="an image file to ask about")
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    prompt = args.prompt or ("Describe this image." if args.image else "Introduce yourself in one sentence.")
    try:
        with VLClient(args.url) as client:
            answer = client.chat([user_message(prompt, [args.image] if args.image else [])],
                                 max_tokens=args.max_tokens)
    except Exception as exc:  # a smoke test reports any failure plainly
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
