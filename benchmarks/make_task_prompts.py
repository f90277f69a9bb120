"""Write benchmarks/tasks/{instance,style,unsafe}.csv: the prompt sets of the three ShapeWorld erasure tasks, and
benchmarks/tasks/unsafe_examples.txt: prompts that evoke the skull (``erase --target-prompts``).

The sets are defined by erasekit.world.tasks.task_prompts; tests/test_tasks.py checks the files equal it.
Run: .venv/bin/python benchmarks/make_task_prompts.py
"""

from __future__ import annotations

from collections import Counter

from erasekit.eval.prompts import write_prompts
from erasekit.utils.io import atomic_file
from erasekit.world.tasks import TASKS, examples_file, prompt_file, skull_examples, task_prompts

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
    with atomic_file(examples_file("unsafe")) as handle:
        handle.write("\n".join(skull_examples()) + "\n")
    print(f"wrote {examples_file('unsafe')}")
