#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it (no extras) into a clean
# venv, and serve from it in front of the dev venv's tiny model. Checks that the files
# that are not Python (the playground, the chat template) are in the wheel and served.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

.venv/bin/pip wheel --quiet --no-deps . -w "$work/dist"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$work"/dist/vlserve-*.whl

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
engine_port=$(free_port)
gateway_port=$(free_port)
VLSERVE_CACHE_DIR="$work/cache" .venv/bin/vlserve serve --port "$engine_port" >"$work/engine.log" 2>&1 &
pids+=($!)
# exec: the pid noted below is the gateway's own, so the cleanup stops it (not only a subshell)
(cd "$work" && UPSTREAM_BASE_URL="http://127.0.0.1:$engine_port" exec "$work/venv/bin/vlserve" serve \
    --port "$gateway_port" >"$work/gateway.log" 2>&1) &
pids+=($!)

url="http://127.0.0.1:$gateway_port"
for _ in $(seq 1 240); do
    curl -fsS "$url/health" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "$url/health" >/dev/null || { cat "$work/engine.log" "$work/gateway.log"; exit 1; }
curl -fsS "$url/" | grep '<html lang="en">' >/dev/null  # grep -q would close the pipe under curl (pipefail: 23)
curl -fsS "$url/playground/app.js" >/dev/null
curl -fsS "$url/playground/vendor/purify.min.js" >/dev/null
curl -fsS "$url/docs" | grep 'swagger' >/dev/null
curl -fsS "$url/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model": "qwen3-vl-tiny-random", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}' \
    | grep '"chat.completion"' >/dev/null
"$work/venv/bin/python" -c 'from importlib.resources import files
assert "im_start" in files("vlserve.engines.local").joinpath("qwen3_vl_chat_template.jinja").read_text()'
echo "wheel: installed without extras, served /, /health, /docs, the playground assets and a chat completion"
