"""The built-in local engine: Hugging Face transformers in this process (generation loop,
constrained decoding, log-probabilities, answers in OpenAI's shapes), and the tiny random
Qwen3-VL it serves by default."""
