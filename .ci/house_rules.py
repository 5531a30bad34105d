"""The house's size rules, checked in CI: no module over 300 lines, no function over 60,
at most 10 modules directly in src/vlserve/. Prints every breach and exits 1 if any."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vlserve"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_ROOT_MODULES = 300, 60, 10


def breaches() -> list[str]:
    found = []
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    if len(root_modules) > MAX_ROOT_MODULES:
        found.append(f"src/vlserve/ has {len(root_modules)} modules (most {MAX_ROOT_MODULES}): {root_modules}")
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent)
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines (most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}(): {length} lines (most {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    problems = breaches()
    print("\n".join(problems) or "house rules: every module and function within its size")
    sys.exit(1 if problems else 0)
