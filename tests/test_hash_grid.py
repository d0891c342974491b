"""HashGrid: tiny-cuda-nn's layout and indexing, Numba kernels vs the torch reference, gradients, bad input."""

from __future__ import annotations

import pytest
import torch

from vision3d.backends import use_tcnn
from vision3d.errors import CheckpointError
from vision3d.fields import HashGrid, HashGridConfig
from vision3d.fields.hash_grid_layout import PRIMES
from vision3d.fields.hash_grid_numba import encode_numba
from vision3d.fields.hash_grid_reference import corner_rows, encode_reference

# Small tables keep the tests fast; 4 levels from resolution 8 with b = 2 give dense and hashed levels.
SMALL = dict(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=2.0)


def positions(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform points plus the unit cube's corners and points just inside its faces."""
    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    edges = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [1 - 1e-7, 0.5, 1], [1e-7, 1, 0]], dtype=dtype)
    return torch.cat([x, edges])


def random_grid(seed: int = 0, **config) -> HashGrid:
    grid = HashGrid(**config)
    with torch.no_grad():
        grid.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))
    return grid


def test_layout_follows_tinycudann():
    grid = HashGrid()  # the default: 16 levels, T = 2^19, resolution 16, b = 2^(8/15)
    layout = grid.layout
    assert grid.n_output_dims == 32
    levels = torch.arange(16, dtype=torch.float32)
    scales = torch.exp2(levels * torch.log2(torch.tensor(1.447269237440378))) * 16 - 1
    torch.testing.assert_close(torch.from_numpy(layout.scales), scales)
    assert list(layout.resolutions[:3]) == [16, 24, 34]  # ceil(scale) + 1: 15 -> 16, 22.2 -> 24, 32.5 -> 34
    dense = layout.resolutions**3 <= 2**19
    assert list(~layout.hashed) == list(dense) and dense[:5].all() and not dense[5:].any()
    sizes = [min(-(-int(r) ** 3 // 8) * 8, 2**19) for r in layout.resolutions]
    assert list(layout.sizes) == sizes
    assert grid.params.shape == (sum(sizes) * 2,) and grid.params.dtype == torch.float32
    assert grid.params.abs().max() <= 1e-4 and grid.params.std() > 3e-5  # tinycudann's U(-1e-4, 1e-4)


def test_dense_and_hashed_rows_at_the_boundary():
    # Level 0: R = 16, R³ = 4096 = T, the largest grid still indexed densely; level 1: R = 32, hashed.
    grid = HashGrid(n_levels=2, log2_hashmap_size=12, base_resolution=16, per_level_scale=2.0)
    assert list(grid.layout.resolutions) == [16, 32] and list(grid.layout.hashed) == [False, True]
    cell = torch.tensor([[1, 2, 3], [15, 15, 15]])
    dense = corner_rows(cell, grid.layout, 0)
    assert dense[0, 0] == 1 + 16 * 2 + 256 * 3 and dense[0, 7] == 2 + 16 * 3 + 256 * 4
    assert dense[1, 7] == (16 + 16 * 16 + 256 * 16) % 4096  # the far corner wraps as tinycudann's `% size`
    hashed = corner_rows(cell, grid.layout, 1)
    u32 = 0xFFFFFFFF
    expect = ((1 * PRIMES[0]) ^ (2 * PRIMES[1] & u32) ^ (3 * PRIMES[2] & u32)) % 4096
    assert hashed[0, 0] == expect
    # One row fewer and level 0 no longer fits: hashed.
    assert HashGrid(n_levels=1, log2_hashmap_size=11, base_resolution=16).layout.hashed[0]
    x = positions(500)
    torch.testing.assert_close(grid(x), encode_reference(x, grid.params, grid.layout), rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_features", [2, 4])
def test_kernels_match_reference(n_features):
    grid = random_grid(n_features_per_level=n_features, **SMALL)
    x = positions(3000).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = grid(x)
    y_ref = encode_reference(x_ref, grid.params, grid.layout)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    table_grad = grid.params.grad.clone()
    grid.params.grad = None
    y_ref.backward(g)
    torch.testing.assert_close(table_grad, grid.params.grad, rtol=0, atol=1e-5)
    assert table_grad.abs().max() > 1
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-3)  # |dx| reaches ~1e3 (scale 63)
    assert x_ref.grad.abs().max() > 10


def test_inplace_grad_accumulates_into_kept_buffer():
    grid = random_grid(grad_mode="inplace", **SMALL)
    x = positions(1000)
    g = torch.randn(x.shape[0], grid.n_output_dims)
    grid(x).backward(g)
    kept = grid.params.grad
    grid(x).backward(g)
    assert grid.params.grad is kept
    reference = random_grid(**SMALL)
    encode_reference(x, reference.params, reference.layout).backward(2 * g)
    torch.testing.assert_close(kept, reference.params.grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("encode", [encode_reference, encode_numba], ids=["reference", "kernels"])
def test_gradcheck_float64(encode):
    layout = HashGrid(n_levels=3, log2_hashmap_size=6, base_resolution=3, per_level_scale=2.0).layout
    assert list(layout.hashed) == [False, True, True]
    gen = torch.Generator().manual_seed(1)
    params = torch.empty(layout.n_params, dtype=torch.float64).uniform_(-1, 1, generator=gen).requires_grad_(True)
    x = (torch.rand(7, 3, generator=gen, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, params: encode(x, params, layout), (x, params))


def test_out_of_bounds_clamp_and_error():
    grid = random_grid(**SMALL)
    x = torch.tensor([[-0.5, 0.5, 1.5], [0.2, 0.3, 0.4]], requires_grad=True)
    y = grid(x)
    torch.testing.assert_close(y, grid(x.detach().clamp(0, 1)))
    y.sum().backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0 and x.grad[0, 1] != 0
    strict = HashGrid(out_of_bounds="error", **SMALL)
    with pytest.raises(ValueError, match=r"1 of 2 positions lie outside \[0, 1\]\^3 \(first at row 0"):
        strict(x)


def test_bad_input_gives_one_line_errors():
    grid = HashGrid(**SMALL)
    x = torch.rand(10, 3)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^HashGrid: 1 of 10 positions are NaN \(first at row 3\)$"):
        grid(x)
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        grid(torch.rand(10, 2))
    with pytest.raises(ValueError, match=r"table size 2\*\*18.5 is not a power of two"):
        HashGridConfig(log2_hashmap_size=18.5)


def test_mismatched_checkpoint_is_refused():
    saved = HashGrid(**SMALL).state_dict()
    with pytest.raises(CheckpointError, match=r"^HashGrid checkpoint was saved with another config: log2_hashmap_size 12 vs 13$"):
        HashGrid(**(SMALL | dict(log2_hashmap_size=13))).load_state_dict(saved)
    del saved["_extra_state"]  # e.g. a tinycudann params vector: only its size can be checked
    with pytest.raises(CheckpointError, match=r"^HashGrid checkpoint has \d+ table params, this grid .* has \d+"):
        HashGrid(**(SMALL | dict(log2_hashmap_size=13))).load_state_dict(saved, strict=False)
    # Same table size, different geometry (every level hashed either way): only the saved config tells.
    fine = HashGrid(n_levels=2, log2_hashmap_size=6, base_resolution=32, per_level_scale=2.0)
    finer = HashGrid(n_levels=2, log2_hashmap_size=6, base_resolution=32, per_level_scale=3.0)
    assert fine.params.shape == finer.params.shape
    with pytest.raises(CheckpointError, match="per_level_scale 2.0 vs 3.0"):
        finer.load_state_dict(fine.state_dict())
    loaded = HashGrid(**SMALL)
    loaded.load_state_dict(HashGrid(**SMALL).state_dict())


def cpu_and_cuda_results(grid: HashGrid) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(output, table grad, position grad) of the grid on CPU (our kernels) and then on CUDA."""
    x = positions(4096)
    g = torch.randn(x.shape[0], grid.n_output_dims, generator=torch.Generator().manual_seed(2))
    results = []
    for device in ("cpu", "cuda"):
        grid = grid.to(device)
        grid.params.grad = None
        xd = x.to(device).requires_grad_(True)
        y = grid(xd)
        y.backward(g.to(device))
        results.append((y.detach().cpu(), grid.params.grad.cpu(), xd.grad.cpu()))
    return results[0], results[1]


def assert_same_encoding(cpu: tuple[torch.Tensor, ...], cuda: tuple[torch.Tensor, ...], loose: bool = False) -> None:
    """Same features, table and position gradients. ``loose``: tinycudann's exp2f may move a level's
    scale by an ulp (~1e-4 at resolution 2048), so features move by ~1e-4 and the piecewise-constant
    position gradient of points within that distance of a cell face jumps: then 99 % must agree."""
    torch.testing.assert_close(cuda[0], cpu[0], rtol=0, atol=2e-3 if loose else 1e-4)
    torch.testing.assert_close(cuda[1], cpu[1], rtol=0, atol=2e-2 if loose else 1e-3)
    close = torch.isclose(cuda[2], cpu[2], rtol=1e-3, atol=1e-1)
    assert close.float().mean() >= (0.99 if loose else 1.0), f"{int((~close).sum())} position gradients differ"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch backend on CUDA vs the CPU kernels)")
def test_cuda_torch_backend_matches_cpu_kernels(monkeypatch):
    monkeypatch.setattr("vision3d.fields.hash_grid.use_tcnn", lambda device: False)
    assert_same_encoding(*cpu_and_cuda_results(random_grid(n_levels=8, log2_hashmap_size=15, per_level_scale=1.5)))


@pytest.mark.skipif(not use_tcnn("cuda"), reason="needs a CUDA GPU with tinycudann installed (see the README)")
def test_tcnn_parity():
    """tinycudann reads our params with its own layout and maths: same features and gradients."""
    assert_same_encoding(*cpu_and_cuda_results(random_grid(n_levels=8, log2_hashmap_size=15, per_level_scale=1.5)),
                         loose=True)
    assert_same_encoding(*cpu_and_cuda_results(random_grid()), loose=True)  # defaults: 5 dense, 11 hashed levels


def test_empty_batch():
    grid = HashGrid(**SMALL)
    x = torch.empty(0, 3, requires_grad=True)
    y = grid(x)
    assert y.shape == (0, grid.n_output_dims)
    y.sum().backward()
    assert x.grad.shape == (0, 3) and not grid.params.grad.any()
