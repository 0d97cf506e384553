"""The grouped CPU LoRA ops against vLLM's own torch ops, on random inputs.

The reference is vLLM's ``torch_ops/lora_ops.py`` loaded from its file under another
module name: the plugin may already have patched the imported module in this process.
Rows with index ``-1`` ("no adapter") are checked against the meaning the GPU kernels
give them (no LoRA contribution), which vLLM's torch ops get wrong (they wrap to the
last slot).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm.lora.ops.torch_ops")

from gateway.engine import cpu_lora_ops, platform_fixes  # noqa: E402

pytestmark = pytest.mark.integration  # runs vLLM's LoRA kernels (torch)

SLOTS, RANK = 4, 8
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2}}


def _reference() -> ModuleType:
    import vllm.lora.ops.torch_ops as package

    path = package.__path__[0] + "/lora_ops.py"
    spec = importlib.util.spec_from_file_location("vllm_torch_lora_ops_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _reference()


def _indices(kind: str, n: int, gen: Any) -> Any:
    """Per-row adapter slots: long runs (prefill), or interleaved rows (decode)."""
    if kind == "runs" and n > 1:
        cuts = sorted(torch.randint(1, n, (3,), generator=gen).tolist())
        lengths = torch.diff(torch.tensor([0, *cuts, n]))
        return torch.repeat_interleave(torch.tensor([2, -1, 0, 2]), lengths)
    if kind == "one":
        return torch.full((n,), 1)
    return torch.randint(-1, SLOTS, (n,), generator=gen)


def _weights(out_features: int, in_features: int, dtype: Any, gen: Any) -> Any:
    w = torch.randn(SLOTS, 1, out_features, in_features, generator=gen) / in_features**0.5
    return w.to(dtype)


def _check_rows(
    got: Any, want: Any, before: Any, indices: Any, *, add: bool, dtype: Any, cols: slice
) -> None:
    """Rows with an adapter match vLLM's op; ``-1`` rows kept (add) or zeroed."""
    has = indices >= 0
    torch.testing.assert_close(got[has], want[has], **TOL[dtype])
    none = ~has
    expected_none = before[none].clone()
    if not add:
        expected_none[:, cols] = 0
    assert torch.equal(got[none], expected_none)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["runs", "one", "interleaved"])
@pytest.mark.parametrize("n", [1, 16, 300])
def test_bgmv_shrink_matches_vllm(dtype: Any, kind: str, n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, 96, generator=gen).to(dtype)
    a = _weights(RANK, 96, dtype, gen)
    idx = _indices(kind, n, gen)
    before = torch.randn(n, RANK, generator=gen)  # vLLM's shrink buffer is float32
    got, want = before.clone(), before.clone()
    cpu_lora_ops.bgmv_shrink(x, a, got, idx, 0.5)
    REF.bgmv_shrink(x, a, want, idx.clamp(min=0), 0.5)
    # bf16 activations: the grouped shrink runs a bf16 GEMM into the float32 buffer.
    _check_rows(got, want, before, idx, add=False, dtype=dtype, cols=slice(None))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["runs", "one", "interleaved"])
@pytest.mark.parametrize("add", [True, False])
def test_bgmv_expand_matches_vllm(dtype: Any, kind: str, add: bool) -> None:
    n = 200
    gen = torch.Generator().manual_seed(7)
    buf = torch.randn(n, RANK, generator=gen)
    b = _weights(64, RANK, dtype, gen)
    idx = _indices(kind, n, gen)
    before = torch.randn(n, 64, generator=gen).to(dtype)
    got, want = before.clone(), before.clone()
    cpu_lora_ops.bgmv_expand(buf, b, got, idx, add)
    REF.bgmv_expand(buf, b, want, idx.clamp(min=0), add)
    _check_rows(got, want, before, idx, add=add, dtype=dtype, cols=slice(None))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("add", [True, False])
def test_expand_slices_write_only_their_columns(dtype: Any, add: bool) -> None:
    """q, k, v slices of one output, as the punica wrapper's ``add_expand`` writes them."""
    n, sizes = 120, (64, 16, 16)
    gen = torch.Generator().manual_seed(3)
    idx = _indices("interleaved", n, gen)
    before = torch.randn(n, sum(sizes), generator=gen).to(dtype)
    got, want = before.clone(), before.clone()
    offset = 0
    for size in sizes:
        buf = torch.randn(n, RANK, generator=gen)
        b = _weights(size, RANK, dtype, gen)
        cpu_lora_ops.bgmv_expand_slice(buf, b, got, idx, offset, size, add)
        REF.bgmv_expand_slice(buf, b, want, idx.clamp(min=0), offset, size, add)
        offset += size
    _check_rows(got, want, before, idx, add=add, dtype=dtype, cols=slice(None))


def _segments(indices: Any) -> tuple[Any, ...]:
    """vLLM's prefill metadata (``compute_meta``): runs of equal neighbours."""
    loras, lengths = torch.unique_consecutive(indices, return_counts=True)
    starts = torch.cumsum(lengths, 0) - lengths
    return starts, lengths, loras, len(loras), int(lengths.max()), int(lengths.sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["runs", "interleaved"])
def test_sgmv_ops_match_vllm(dtype: Any, kind: str) -> None:
    n = 700  # "interleaved" gathers rows per adapter; "runs" slices long runs
    gen = torch.Generator().manual_seed(11)
    idx = _indices(kind, n, gen)
    meta = _segments(idx)
    ref_meta = (meta[0], meta[1], meta[2].clamp(min=0), *meta[3:])
    x = torch.randn(n, 96, generator=gen).to(dtype)
    a = _weights(RANK, 96, dtype, gen)
    b = _weights(48, RANK, dtype, gen)

    got_buf, want_buf = torch.zeros(n, RANK), torch.zeros(n, RANK)
    cpu_lora_ops.sgmv_shrink(x, a, got_buf, *meta, 0.25)
    REF.sgmv_shrink(x, a, want_buf, *ref_meta, 0.25)
    _check_rows(
        got_buf,
        want_buf,
        torch.zeros(n, RANK),
        idx,
        add=False,
        dtype=dtype,
        cols=slice(None),
    )

    before = torch.randn(n, 96, generator=gen).to(dtype)
    for add in (True, False):
        got, want = before.clone(), before.clone()
        cpu_lora_ops.sgmv_expand(want_buf, b, got, *meta, add)
        REF.sgmv_expand(want_buf, b, want, *ref_meta, add)
        _check_rows(
            got[:, :48], want[:, :48], before[:, :48], idx, add=add, dtype=dtype, cols=slice(None)
        )
        assert torch.equal(got[:, 48:], before[:, 48:])

        got, want = before.clone(), before.clone()
        cpu_lora_ops.sgmv_expand_slice(want_buf, b, got, *meta, 40, 48, add)
        REF.sgmv_expand_slice(want_buf, b, want, *ref_meta, 40, 48, add)
        _check_rows(got, want, before, idx, add=add, dtype=dtype, cols=slice(40, 88))


def test_a_row_plan_is_never_reused_for_changed_indices() -> None:
    """The plan memo keys on content: an index buffer rewritten in place gets a new plan."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(32, 64, generator=gen)
    a = _weights(RANK, 64, torch.float32, gen)
    idx = _indices("interleaved", 32, gen)
    first = torch.zeros(32, RANK)
    cpu_lora_ops.bgmv_shrink(x, a, first, idx, 1.0)
    idx.copy_(torch.roll(idx, 1))  # same tensor, same address, new content
    got, want = torch.zeros(32, RANK), torch.zeros(32, RANK)
    cpu_lora_ops.bgmv_shrink(x, a, got, idx, 1.0)
    REF.bgmv_shrink(x, a, want, idx.clamp(min=0), 1.0)
    _check_rows(
        got, want, torch.zeros(32, RANK), idx, add=False, dtype=torch.float32, cols=slice(None)
    )


@pytest.mark.parametrize("lora", [2, -1])
@pytest.mark.parametrize("add", [True, False])
def test_one_input_row_broadcasts_like_vllm(lora: int, add: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    buf = torch.randn(1, RANK, generator=gen)
    b = _weights(32, RANK, torch.float32, gen)
    before = torch.randn(5, 32, generator=gen)
    got, want = before.clone(), before.clone()
    cpu_lora_ops.bgmv_expand(buf, b, got, torch.tensor([lora]), add)
    if lora < 0:
        want = before if add else torch.zeros_like(before)
    else:
        REF.bgmv_expand(buf, b, want, torch.tensor([lora]), add)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.fixture
def pristine_vllm_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's op names as loaded, restored after the test; nothing applied yet."""
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, torch_ops, punica_cpu):
        for name in cpu_lora_ops.OPS:
            monkeypatch.setattr(module, name, getattr(REF, name))
    for name in ("update_metadata", "add_lora_linear"):
        method = getattr(punica_cpu.PunicaWrapperCPU, name)
        monkeypatch.setattr(
            punica_cpu.PunicaWrapperCPU, name, getattr(method, "__wrapped__", method)
        )
    monkeypatch.setattr(platform_fixes, "_applied", set())


@pytest.mark.usefixtures("pristine_vllm_ops")
def test_the_plugin_installs_the_grouped_ops_where_vllm_calls_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    monkeypatch.delenv(platform_fixes.CPU_LORA_OPS_ENV, raising=False)
    assert platform_fixes.apply_cpu_lora_fixes() == "cpu_lora_grouped_ops"
    for name in cpu_lora_ops.OPS:
        assert getattr(punica_cpu, name) is getattr(cpu_lora_ops, name)
        assert getattr(lora_ops, name) is getattr(cpu_lora_ops, name)
    wrapper = punica_cpu.PunicaWrapperCPU
    assert wrapper.add_lora_linear.__module__ == "gateway.engine.cpu_lora_linear"
    assert wrapper.update_metadata.__module__ == "gateway.engine.cpu_lora_linear"
    # The -1 wrapper is not stacked on top of ops that already skip -1 rows.
    assert platform_fixes.apply_cpu_lora_no_adapter_index()
    assert punica_cpu.bgmv_shrink is cpu_lora_ops.bgmv_shrink


@pytest.mark.usefixtures("pristine_vllm_ops")
def test_the_grouped_ops_can_run_under_vllms_add_lora_linear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    monkeypatch.setenv(platform_fixes.CPU_LORA_OPS_ENV, "ops-only")
    assert platform_fixes.apply_cpu_lora_fixes() == "cpu_lora_grouped_ops"
    assert punica_cpu.sgmv_shrink is cpu_lora_ops.sgmv_shrink
    assert punica_cpu.PunicaWrapperCPU.add_lora_linear.__module__.startswith("vllm.")


@pytest.mark.usefixtures("pristine_vllm_ops")
def test_vllm_ops_can_be_kept_for_a_before_after_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    monkeypatch.setenv(platform_fixes.CPU_LORA_OPS_ENV, "vllm")
    assert platform_fixes.apply_cpu_lora_fixes() == "cpu_lora_no_adapter_index"
    assert punica_cpu.bgmv_shrink.__wrapped__ is REF.bgmv_shrink
    assert punica_cpu.sgmv_shrink is REF.sgmv_shrink
    assert punica_cpu.PunicaWrapperCPU.add_lora_linear.__module__.startswith("vllm.")


def test_other_vllm_versions_keep_vllm_ops(
    pristine_vllm_ops: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vllm

    monkeypatch.setattr(vllm, "__version__", "0.99.0")
    assert not platform_fixes.apply_cpu_lora_grouped_ops()


@pytest.mark.parametrize("add", [True, False])
def test_a_row_gets_the_same_bits_sliced_or_gathered(add: bool) -> None:
    """Solo, a request's rows are one slice; in a mixed batch the same rows may be
    gathered. Both paths must round alike, or a greedy output changes with its batch
    (the engine test's solo-vs-mixed equality)."""
    n = 70
    gen = torch.Generator().manual_seed(9)
    mixed = torch.tensor([1, 2] * (n // 2))  # adapter 1's rows interleaved: gathered
    buf = torch.randn(n, RANK, generator=gen)
    b = _weights(64, RANK, torch.bfloat16, gen)
    before = torch.randn(n, 64, generator=gen).to(torch.bfloat16)
    in_batch = before.clone()
    cpu_lora_ops.bgmv_expand(buf, b, in_batch, mixed, add)
    mine = mixed == 1
    solo = before[mine].clone()
    cpu_lora_ops.bgmv_expand(buf[mine], b, solo, torch.ones(int(mine.sum()), dtype=torch.long), add)
    assert torch.equal(in_batch[mine], solo)
