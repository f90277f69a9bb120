"""``utils/devices.resolve``: the --device / --dtype table, with the machine's devices injected (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from erasekit.errors import UserError
from erasekit.utils.devices import Availability, dtype_name, resolve, solve_device, supports_float64

CPU_ONLY = Availability()
GPU_BF16 = Availability(cuda_devices=2, cuda_bf16=True)
GPU_FP16 = Availability(cuda_devices=1, cuda_bf16=False)
MAC = Availability(mps=True)


@pytest.mark.parametrize(
    ("have", "device", "dtype", "expected"),
    [
        (CPU_ONLY, "auto", "auto", ("cpu", torch.float32)),
        (CPU_ONLY, None, None, ("cpu", torch.float32)),
        (GPU_BF16, "auto", "auto", ("cuda", torch.bfloat16)),
        (GPU_FP16, "auto", "auto", ("cuda", torch.float16)),
        (GPU_BF16, "cpu", "auto", ("cpu", torch.float32)),
        (GPU_BF16, "cuda:1", "float32", ("cuda:1", torch.float32)),
        (GPU_FP16, "cuda", "bfloat16", ("cuda", torch.bfloat16)),
        (CPU_ONLY, "cpu", "bfloat16", ("cpu", torch.bfloat16)),
        (CPU_ONLY, "CPU", "float16", ("cpu", torch.float16)),
        (CPU_ONLY, "cpu", torch.float16, ("cpu", torch.float16)),
        (CPU_ONLY, torch.device("cpu:0"), "auto", ("cpu", torch.float32)),
        (GPU_BF16, torch.device("cuda:1"), "auto", ("cuda:1", torch.bfloat16)),
        (MAC, "mps", "auto", ("mps", torch.float32)),
        (MAC, "auto", "auto", ("cpu", torch.float32)),
    ],
)
def test_resolution_table(have, device, dtype, expected) -> None:
    chosen, chosen_dtype = resolve(device, dtype, have)
    assert (str(chosen), chosen_dtype) == expected


@pytest.mark.parametrize(
    ("have", "device", "dtype", "fragment"),
    [
        (CPU_ONLY, "cuda", "auto", "no CUDA GPU"),
        (CPU_ONLY, "cuda:0", "auto", "no CUDA GPU"),
        (GPU_FP16, "cuda:1", "auto", "1 CUDA device"),
        (CPU_ONLY, "mps", "auto", "no MPS"),
        (CPU_ONLY, "tpu", "auto", "choose one of"),
        (CPU_ONLY, "cuda:x", "auto", "choose one of"),
        (CPU_ONLY, "cpu", "float64", "choose one of"),
        (CPU_ONLY, "cpu", "half", "choose one of"),
        (CPU_ONLY, "cpu", torch.int8, "choose one of"),
    ],
)
def test_bad_or_missing_devices_are_one_line_user_errors(have, device, dtype, fragment) -> None:
    with pytest.raises(UserError, match=fragment) as caught:
        resolve(device, dtype, have)
    assert "\n" not in str(caught.value)


def test_the_real_machine_resolves_auto() -> None:
    device, dtype = resolve("auto", "auto")
    assert device.type in ("cpu", "cuda") and dtype in (torch.float32, torch.float16, torch.bfloat16)


def test_float64_solves_move_off_mps_only() -> None:
    assert supports_float64(torch.device("cpu")) and not supports_float64(torch.device("mps"))
    assert solve_device(torch.device("mps")) == torch.device("cpu")
    assert solve_device(torch.device("cuda:1")) == torch.device("cuda:1")
    assert dtype_name(torch.bfloat16) == "bfloat16"


def test_the_api_erases_in_bfloat16_and_the_edit_applies_in_float32(tmp_path) -> None:
    import erasekit
    from tiny_pipelines import build_sd

    folder = build_sd(tmp_path / "sd")
    edit = erasekit.erase(
        folder, ["cat"], method="uce", anchor="animal", templates=["a {}"], device="cpu", dtype="bfloat16"
    )
    assert edit.weights and all(w.dtype == torch.bfloat16 for w in edit.weights.values())
    model = erasekit.load_model(folder, device="cpu", dtype="float32")
    before = {name: m.weight.detach().clone() for name, m in model.projectors().items()}
    with edit.applied(model):
        assert all(m.weight.dtype == torch.float32 for m in model.projectors().values())
    assert all(torch.equal(before[name], m.weight) for name, m in model.projectors().items())
