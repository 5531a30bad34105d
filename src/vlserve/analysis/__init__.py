"""Analysis tasks: prompts (presets), tolerant parsing of what the model writes (jsontext,
results), coordinates (geometry) and schema-checked extraction (extract)."""

from .presets import TASKS, TaskInput, build_prompt
from .results import parse_result

__all__ = ["TASKS", "TaskInput", "build_prompt", "parse_result"]
