"""Run one LMDeploy release's own Qwen3-VL preprocessing on one image, as its server would
for a chat request: `python tests/lmdeploy_preprocess.py < request.json`.

Run in a subprocess with that release (and what it imports) first on PYTHONPATH (see
.ci/lmdeploy_preprocessing.sh). The request: {"model": checkpoint folder, "image": the
image's data URL as vlserve sends it, "mm_processor_kwargs": as vlserve sends them}.
Prints {"version", "grid", "image_tokens"}: the tokens LMDeploy gives the model.
"""

from __future__ import annotations

import base64
import io
import json
import sys

from PIL import Image


def main() -> None:
    request = json.load(sys.stdin)
    import lmdeploy
    from lmdeploy.vl.model.qwen3 import Qwen3VLModel

    image = Image.open(io.BytesIO(base64.b64decode(request["image"].split(",", 1)[1])))
    model = Qwen3VLModel(request["model"])
    model.build_preprocessor()
    kwargs = request["mm_processor_kwargs"]
    major_minor = tuple(int(part) for part in lmdeploy.__version__.split(".")[:2])
    if major_minor < (0, 13):  # the message-list interface (0.11: key "image", 0.12: "data")
        key = "image" if major_minor < (0, 12) else "data"
        messages = [{"role": "user", "content": [{"type": "text", "text": "describe"}, {"type": "image", key: image}]}]
        result = model.preprocess(messages, kwargs)[-1]["content"][0]
        grid, tokens = result["image_grid_thw"].reshape(-1, 3).tolist()[0], int(result["image_tokens"].sum())
    else:  # 0.13+: the prompt with one placeholder per image, and the items
        messages = [{"role": "user", "content": [{"type": "text", "text": "describe"}, {"type": "image", "data": image}]}]
        prompt = (f"<|im_start|>user\n{model.vision_start_token}{model.image_token}{model.vision_end_token}describe"
                  "<|im_end|>\n<|im_start|>assistant\n")
        out = model.preprocess(messages, prompt, kwargs)
        grid = out["multimodal"][0]["image_grid_thw"].reshape(-1, 3).tolist()[0]
        tokens = sum(1 for token in out["input_ids"] if token == model.image_token_id)
    json.dump({"version": lmdeploy.__version__, "grid": grid, "image_tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
