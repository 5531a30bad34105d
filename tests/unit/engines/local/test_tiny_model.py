"""The tiny random Qwen3-VL: complete, loadable by transformers, deterministic, Qwen-shaped."""

from __future__ import annotations

import hashlib
import json

from vlserve.engines.local.tiny_model import QWEN_PLAIN_ADDED_TOKENS, QWEN_SPECIAL_TOKENS, VOCAB_SIZE, build_tiny_model

REQUIRED_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
                  "video_preprocessor_config.json"}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_is_complete_and_deterministic(tiny_model_dir, tmp_path):
    assert REQUIRED_FILES <= {p.name for p in tiny_model_dir.iterdir()}
    again = build_tiny_model(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(again / name) == digest(tiny_model_dir / name), name
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert digest(other / "model.safetensors") != digest(tiny_model_dir / "model.safetensors")


def test_qwen_tokens_have_qwens_ids_and_the_config_uses_them(tiny_model_dir, processor):
    tokenizer = processor.tokenizer
    assert len(tokenizer) == VOCAB_SIZE
    ids = tokenizer.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS + QWEN_PLAIN_ADDED_TOKENS)
    assert ids == list(range(VOCAB_SIZE - 26, VOCAB_SIZE))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config["vision_start_token_id"] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config["text_config"]["vocab_size"] == VOCAB_SIZE and config["text_config"]["head_dim"] == 64
    text = "Hello, world! 123 ünïcode"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_chat_template_renders_like_qwen3_vl(processor):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": "A cat."},
                {"role": "user", "content": "Sure?"}]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
                        "<|im_start|>assistant\nA cat.<|im_end|>\n"
                        "<|im_start|>user\nSure?<|im_end|>\n<|im_start|>assistant\n")


def test_model_generates_from_an_image(tiny_model_dir, processor):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}],
                                         tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (640, 480))], return_tensors="pt")
    # 640x480 with patch 16 and merge 2 is 20x15 = 300 image tokens.
    assert int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == 300
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5
