"""Engines run the model: the protocol every engine follows (base), the parser of what a
Qwen-style model writes (answer), and two families: `upstream/` (HTTP to an
OpenAI-compatible server) and `local/` (transformers in this process)."""
