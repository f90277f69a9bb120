"""erasekit export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import (
    Device,
    Dtype,
    Memory,
    Overwrite,
    WithoutT5,
    app,
    check_out,
    console,
    load_edit,
    load_model,
    summary_table,
)


@app.command()
def export(
    edit: Annotated[Path, typer.Option(help="edit artifact folder")],
    model: Annotated[str, typer.Option(help="the local diffusers folder the edit was made for")],
    out: Annotated[Path, typer.Option(help="folder for the edited pipeline (save_pretrained, atomic)")],
    device: Device = "auto",
    dtype: Dtype = "auto",
    memory: Memory = None,
    without_t5: WithoutT5 = False,
    overwrite: Overwrite = False,
) -> None:
    """Write the edited model as a complete diffusers folder (SD 1.x/2.x, SDXL, SD3)."""
    from erasekit.artifacts import export_artifact

    check_out(out, overwrite, model, edit)
    artifact = load_edit(edit)
    backbone = load_model(model, device=device, dtype=dtype, memory=memory, without_t5=without_t5)
    export_artifact(backbone, artifact, out, overwrite)
    console.print(summary_table("export", [("edit", str(edit)), ("model", model), ("out", str(out))]))
