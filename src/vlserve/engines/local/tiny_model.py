"""Build a tiny, randomly initialised Qwen3-VL checkpoint, offline, in seconds.

The checkpoint has the real architecture (``Qwen3VLForConditionalGeneration``), a real
processor (Qwen2VL image processor, Qwen3VL video processor, Qwen2 tokenizer) and the
real Qwen3-VL-Instruct chat template. Only the weights and the vocabulary are made up:
the tokenizer is a byte-level BPE trained here from a generated corpus, with Qwen's 26
added tokens appended in their real order. Its answers are nonsense; its shapes, code
paths and token accounting are those of the real model.

The sizes follow the config a real LMDeploy 0.18 served on a GPU (head_dim 64 so that
every engine's attention kernels accept it; vocab equal to the tokenizer's length so
every id the random model samples decodes).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from importlib import resources
from pathlib import Path

# Qwen's added tokens, in the order (and so with the ids) the real tokenizer gives them.
# The first 14 are "special" (dropped by skip_special_tokens); the rest are plain added
# tokens, as in Qwen's own tokenizer_config.json.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
QWEN_PLAIN_ADDED_TOKENS = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
]
VOCAB_SIZE = 2048
# Qwen2's pre-tokenizer split pattern (contractions, letters, single digits, punctuation,
# newlines, spaces); byte-level encoding follows it.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TINY_MODEL_NAME = "qwen3-vl-tiny-random"


def chat_template() -> str:
    """The Qwen3-VL-Instruct chat template, as shipped with the real checkpoints."""
    return resources.files("vlserve.engines.local").joinpath("qwen3_vl_chat_template.jinja").read_text()


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    """Deterministic English-looking text, rich enough to train ~2,000 BPE merges."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwyz" for v in ("a", "e", "i", "o", "u", "ou", "ea")]
    common = ("the a of and to in is it that image picture shows with on for are this "
              "there red blue green person car dog cat text table document left right").split()
    words = common + ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(1500)]
    out = []
    for _ in range(lines):
        n = rng.randint(4, 14)
        sentence = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            sentence += f" {rng.randint(0, 1999)}"
        out.append(sentence.capitalize() + rng.choice([".", "?", "!", ",", ":"]))
    return out


def build_tokenizer(seed: int):
    """A byte-level BPE tokenizer with Qwen's pre-tokenizer and added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    n_added = len(QWEN_SPECIAL_TOKENS) + len(QWEN_PLAIN_ADDED_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - n_added,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer)
    if tok.get_vocab_size() != VOCAB_SIZE - n_added:
        raise RuntimeError(f"BPE training gave {tok.get_vocab_size()} tokens, expected {VOCAB_SIZE - n_added}")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_PLAIN_ADDED_TOKENS])
    return tok


def _model_config(ids: dict[str, int]):
    from transformers import Qwen3VLConfig

    text = dict(
        vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                         "mrope_section": [12, 10, 10], "mrope_interleaved": True},
    )
    vision = dict(
        depth=3, hidden_size=128, intermediate_size=256, num_heads=2, patch_size=16,
        spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=256,
        num_position_embeddings=2304, deepstack_visual_indexes=[0, 1, 2],
    )
    return Qwen3VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def _processor(tokenizer_object, ids: dict[str, int]):
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object)
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=fast.backend_tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None,  # type: ignore[arg-type]  # Qwen's tokenizer has neither
        errors="replace", model_max_length=262144, clean_up_tokenization_spaces=False, split_special_tokens=False,
    )
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 4096, "longest_edge": 25165824},
    )
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, chat_template=chat_template())


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny Qwen3-VL checkpoint to ``out_dir`` and return its path.

    The directory is written atomically (built in a temporary sibling, then renamed), so
    a concurrent reader never sees half a checkpoint.
    """
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    try:
        tokenizer_object = build_tokenizer(seed)
        ids = {t: tokenizer_object.token_to_id(t) for t in QWEN_SPECIAL_TOKENS + QWEN_PLAIN_ADDED_TOKENS}
        config = _model_config(ids)
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()  # type: ignore[arg-type]
        model.generation_config = GenerationConfig(
            bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
            pad_token_id=ids["<|endoftext|>"], do_sample=True, temperature=0.7, top_k=20, top_p=0.8,
            repetition_penalty=1.0,
        )
        model.save_pretrained(tmp)
        processor = _processor(tokenizer_object, ids)
        processor.save_pretrained(tmp)
        # Engines other than transformers (LMDeploy, vLLM) read the per-part files too.
        processor.image_processor.to_json_file(tmp / "preprocessor_config.json")
        processor.video_processor.to_json_file(tmp / "video_preprocessor_config.json")
        (tmp / "tiny_info.json").write_text(json.dumps(
            {"name": TINY_MODEL_NAME, "seed": seed, "random_weights": True, "token_ids": ids}, indent=2))
        tmp.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def is_tiny_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint this module built (its answers are random)."""
    return (Path(path) / "tiny_info.json").is_file()


def ensure_tiny_model(cache_dir: str | Path, seed: int = 0) -> Path:
    """Return the cached tiny checkpoint for ``seed``, building it on first use."""
    path = Path(cache_dir) / f"tiny-qwen3-vl-seed{seed}"
    if not is_checkpoint(path):
        build_tiny_model(path, seed)
    return path
