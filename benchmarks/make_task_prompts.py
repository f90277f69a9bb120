"""Write benchmarks/tasks/{instance,style,unsafe}.csv: the prompt sets of the three ShapeWorld erasure tasks.

The sets are defined by erasekit.eval.tasks.task_prompts; tests/test_tasks.py checks the files equal it.
Run: .venv/bin/python benchmarks/make_task_prompts.py
"""

from __future__ import annotations

from collections import Counter

from erasekit.eval.prompts import write_prompts
from erasekit.eval.tasks import TASKS, prompt_file, task_prompts

if __name__ == "__main__":
    for name, task in TASKS.items():
        rows = task_prompts(task)
        path = prompt_file(name)
        write_prompts(path, rows)
        counts = Counter((r.role, r.group) for r in rows)
        print(
            f"wrote {path} ({len(rows)} rows): "
            + ", ".join(f"{role}/{group} {n}" for (role, group), n in counts.items())
        )
