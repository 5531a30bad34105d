"""vlserve: OpenAI-compatible serving for Qwen3-VL and other vision-language models."""

__version__ = "0.1.0"
