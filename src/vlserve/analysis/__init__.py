"""Analysis tasks: the registry (tasks), prompts (presets), tolerant parsing of what the
model writes (jsontext, results), coordinates (geometry) and schema-checked extraction
(extract)."""

from vlserve.analysis.presets import TaskInput
from vlserve.analysis.tasks import TASK_NAMES, TASKS, Task, build_prompt, check_input, describe_tasks, parse_result

__all__ = ["TASKS", "TASK_NAMES", "Task", "TaskInput", "build_prompt", "check_input", "describe_tasks",
           "parse_result"]
