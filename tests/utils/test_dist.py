"""The gradient-correct gather, checked with two real gloo processes on CPU.

One spawn runs every scenario on 2 ranks and saves what each rank saw; the tests compare that
with a single process on the whole batch. The batch is asymmetric (the two halves come from
different distributions) because a symmetric one can hide a wrong gradient reduction.
"""

import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from solo_ext.losses.magma import magma_loss
from solo_ext.losses.tcr import tcr_loss
from solo_ext.losses.uniformity import uniformity_loss
from solo_ext.utils.dist import gather, get_rank, get_world_size, is_distributed

WORLD_SIZE = 2
BATCH = 12  # global; 6 rows per rank
DTYPE = torch.float64

# each case: (features the loss reads, loss of (hidden, out))
CASES = {
    "uniformity": lambda hidden, out: uniformity_loss(out),
    "tcr": lambda hidden, out: tcr_loss(out, mu=2.0),
    "tcr_centering": lambda hidden, out: tcr_loss(out, mu=2.0, centering=True),
    "magma": lambda hidden, out: magma_loss(hidden, out),
}


class TinyModel(nn.Module):
    """Two layers, so MAGMA can build its graph from one and regularize the other."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(5, 8)
        self.second = nn.Linear(8, 4)

    def forward(self, x):
        hidden = torch.tanh(self.first(x))
        return hidden, self.second(hidden)


def _model():
    torch.manual_seed(0)
    return TinyModel().to(DTYPE)


def _batch():
    generator = torch.Generator().manual_seed(1)
    first_half = torch.randn(BATCH // 2, 5, generator=generator, dtype=DTYPE)
    second_half = 3 * torch.randn(BATCH // 2, 5, generator=generator, dtype=DTYPE) + 1
    return torch.cat([first_half, second_half])


class _LocalSliceGather(torch.autograd.Function):
    """The U-MAE and M-MAE code's gather: backward keeps only the local slice (solo-learn's current
    GatherLayer all-reduces, as ours)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def _run_case(model, x_local, case, gather_fn):
    model.zero_grad()
    hidden, out = model(x_local)
    loss = CASES[case](gather_fn(hidden), gather_fn(out))
    loss.backward()
    return {"loss": loss.detach(), "grads": [p.grad.clone() for p in model.parameters()]}


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {"is_distributed": is_distributed(), "world_size": get_world_size(), "rank": get_rank()}

        rows = BATCH // WORLD_SIZE
        x_local = _batch()[rank * rows : (rank + 1) * rows]
        ddp = nn.parallel.DistributedDataParallel(_model())
        for case in CASES:
            results[case] = _run_case(ddp, x_local, case, gather)
            results[f"{case}_local_slice"] = _run_case(ddp, x_local, case, _LocalSliceGather.apply)

        # plain gather: a non-contiguous input, and an upstream gradient that differs per rank
        base = torch.arange(6, dtype=DTYPE).reshape(3, 2) + 10 * rank
        x = base.T.clone().requires_grad_()  # (2, 3)
        gathered = gather(x.T)  # x.T is non-contiguous, (3, 2)
        upstream = torch.full_like(gathered, float(rank + 1)) * torch.arange(1, 7, dtype=DTYPE)[:, None]
        (gathered * upstream).sum().backward()
        results["plain"] = {"gathered": gathered.detach(), "grad": x.grad.T.clone()}

        try:
            gather(torch.zeros(3 + rank, 2))
        except ValueError as err:
            results["unequal_error"] = str(err)
        torch.save(results, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("gather")
    mp.spawn(_worker, args=(_free_port(), out_dir), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def _single_process(case):
    model = _model()
    return _run_case(model, _batch(), case, lambda t: t)


assert_equal = partial(torch.testing.assert_close, rtol=1e-10, atol=1e-12)


def test_rank_queries(ranks):
    assert [r["rank"] for r in ranks] == list(range(WORLD_SIZE))
    assert all(r["world_size"] == WORLD_SIZE and r["is_distributed"] for r in ranks)


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one_process(ranks, case):
    expected = _single_process(case)
    assert any(g.abs().max() > 1e-6 for g in expected["grads"]), "premise: the loss has a gradient"
    for result in ranks:
        assert_equal(result[case]["loss"], expected["loss"])
        for got, want in zip(result[case]["grads"], expected["grads"], strict=True):
            assert_equal(got, want)


@pytest.mark.parametrize("case", list(CASES))
def test_local_slice_backward_is_off_by_the_world_size(ranks, case):
    expected = _single_process(case)
    for result in ranks:
        got = result[f"{case}_local_slice"]["grads"]
        for g, want in zip(got, expected["grads"], strict=True):
            assert_equal(g * WORLD_SIZE, want)
        assert not all(torch.allclose(g, w) for g, w in zip(got, expected["grads"], strict=True))


def test_gather_values_and_summed_gradient(ranks):
    bases = [torch.arange(6, dtype=DTYPE).reshape(3, 2) + 10 * r for r in range(WORLD_SIZE)]
    # rank q's upstream gradient for gathered row i is (q + 1)·(i + 1); the sum over q is 3·(i + 1)
    summed = sum(q + 1 for q in range(WORLD_SIZE)) * torch.arange(1, 7, dtype=DTYPE)[:, None].expand(6, 2)
    for rank, result in enumerate(ranks):
        assert torch.equal(result["plain"]["gathered"], torch.cat(bases))
        assert torch.equal(result["plain"]["grad"], summed[3 * rank : 3 * rank + 3])


def test_unequal_shapes_raise_on_every_rank(ranks):
    for result in ranks:
        assert "same shape on every rank" in result["unequal_error"]
        assert "(3, 2), (4, 2)" in result["unequal_error"]


def test_single_process_is_identity():
    assert not is_distributed()
    assert (get_world_size(), get_rank()) == (1, 0)
    x = torch.randn(4, 3, requires_grad=True)
    assert gather(x) is x
