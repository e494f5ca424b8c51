"""Chunked full-ranking evaluation: the metrics streamed over item chunks equal the full-matrix ones exactly
(ties, excluded items, any chunk size), reads stay within ``item_chunk`` columns, and the evaluation of a
200,000-item catalogue never holds a ``[users x items]`` score matrix."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec_dist.config import EvalConfig
from metarec_dist.eval.cold_start import evaluate_cold_start
from metarec_dist.eval.protocol import AdaptingScorer, Diverged
from metarec_dist.meta import MetaLearner, build_algorithm
from metarec_dist.metrics.ranking import PAD, ChunkedRanking, ranking_metrics
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.sampler import prefix_batch
from metarec_dist.tasks.types import MetaBatch, bos_id


def _case(seed: int, users: int = 23, items: int = 41, levels: int = 5):
    """Integer-valued scores (many ties), relevant sets with pads and repeats, excluded items with pads,
    one user with no relevant item; the next item is never excluded."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (users, items), generator=gen).float()
    rel = torch.randint(0, items, (users, 6), generator=gen)
    rel[torch.rand(users, 6, generator=gen) < 0.3] = PAD
    rel[:, 1] = rel[:, 0]  # a repeated relevant item counts once
    rel[0] = PAD  # no relevant item: NaN recall / ndcg
    nxt = torch.randint(0, items, (users,), generator=gen)
    excl = torch.randint(0, items, (users, 4), generator=gen)
    excl[excl == nxt[:, None]] = PAD
    excl[:, 0] = rel[:, 2].clamp(min=0)  # excluded relevant items never count as hits
    excl[excl == nxt[:, None]] = PAD
    excl[:, -1] = PAD
    return scores, rel, nxt, excl


def _chunked(scores, rel, nxt, excl, chunk, ks=(1, 3, 10), next_ks=(1, 5)):
    ranking = ChunkedRanking(scores.shape[1], rel, nxt, ks, next_ks, excl, item_chunk=chunk)
    ranking.run(lambda lo, hi: scores[:, lo:hi])
    return ranking.result()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_equals_full_for_every_chunk_size(seed: int) -> None:
    scores, rel, nxt, excl = _case(seed)
    full = ranking_metrics(scores, rel, nxt, ks=(1, 3, 10), next_ks=(1, 5), exclude=excl)
    v = scores.shape[1]
    for chunk in (1, 2, 7, v - 1, v, v + 13):
        _assert_same(_chunked(scores, rel, nxt, excl, chunk), full)


def _reference(scores, rel, nxt, excl, ks, next_ks):
    """Per-user Python loop over the documented rules: for the set metrics order by score (higher first),
    relevant items after tied non-relevant ones; the next item's rank counts strictly higher scores only;
    excluded items score -inf and never hit."""
    out: dict[str, list[float]] = {}
    for u in range(scores.shape[0]):
        s = scores[u].tolist()
        for i in excl[u].tolist():
            if i != PAD:
                s[i] = -math.inf
        relset = {i for i in rel[u].tolist() if i != PAD}
        order = sorted(range(len(s)), key=lambda j: (-s[j], j in relset, j))
        for k in ks:
            hits = [j in relset and s[j] > -math.inf for j in order[:k]]
            n = len(relset)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(n, k)))
            dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
            out.setdefault(f"recall@{k}", []).append(sum(hits) / n if n else math.nan)
            out.setdefault(f"ndcg@{k}", []).append(dcg / idcg if n else math.nan)
        rank = 1 + sum(x > s[nxt[u]] for x in s)
        for k in next_ks:
            out.setdefault(f"hr@{k}", []).append(float(rank <= k))
            out.setdefault(f"next_ndcg@{k}", []).append(1 / math.log2(rank + 1) if rank <= k else 0.0)
        out.setdefault("mrr", []).append(1 / rank)
    return out


def test_ties_follow_the_documented_rule() -> None:
    scores, rel, nxt, excl = _case(4, levels=3)  # 3 levels over 41 items: ties everywhere
    got = _chunked(scores, rel, nxt, excl, chunk=5, ks=(1, 3, 10, 20), next_ks=(1, 5))
    ref = _reference(scores, rel, nxt, excl, (1, 3, 10, 20), (1, 5))
    for name, values in ref.items():
        assert got[name].tolist() == pytest.approx(values, rel=1e-6, abs=1e-7, nan_ok=True), name


def test_without_ties_equals_the_topk_formula() -> None:
    """On tie-free scores the rank-based set metrics are exactly the previous topk-based ones."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.rand(16, 300, generator=gen)
    rel = torch.randint(0, 300, (16, 10), generator=gen)
    excl = torch.randint(0, 300, (16, 5), generator=gen)
    nxt = rel[:, 0].clone()
    excl[excl == nxt[:, None]] = PAD
    got = _chunked(scores, rel, nxt, excl, chunk=64, ks=(10, 20), next_ks=(10,))
    masked = scores.clone()
    for u in range(16):
        masked[u, [i for i in excl[u].tolist() if i != PAD]] = -math.inf
    rel_mask = torch.zeros(16, 300, dtype=torch.bool).scatter_(1, rel, True)
    top = torch.topk(masked, 20, dim=1)
    hits = rel_mask.gather(1, top.indices) & (top.values > -math.inf)
    disc = (1.0 / torch.log2(torch.arange(1, 21, dtype=torch.float64) + 1.0)).float()
    n_rel = rel_mask.sum(1)
    for k in (10, 20):
        assert torch.equal(got[f"recall@{k}"], hits[:, :k].sum(1).float() / n_rel.float())
        idcg = torch.cat([disc.new_zeros(1), disc[:k].cumsum(0)])[n_rel.clamp(max=k)]
        assert torch.equal(got[f"ndcg@{k}"], (hits[:, :k].float() * disc[:k]).sum(1) / idcg)


def test_reads_stay_within_the_chunk() -> None:
    scores, rel, nxt, excl = _case(6, items=100)
    seen: list[tuple[int, int]] = []

    def score_range(lo: int, hi: int) -> torch.Tensor:
        seen.append((lo, hi))
        return scores[:, lo:hi]

    ranking = ChunkedRanking(100, rel, nxt, (10,), (10,), excl, item_chunk=30)
    ranking.run(score_range)
    one_pass = [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert seen == one_pass + one_pass  # pass 1 reads the ground-truth scores, pass 2 counts
    seen.clear()
    ranking = ChunkedRanking(100, rel, nxt, (10,), (10,), excl, item_chunk=100)
    ranking.run(score_range)
    assert seen == [(0, 100)]  # one chunk: one read


def test_bad_chunks_and_scores_are_refused() -> None:
    scores, rel, nxt, excl = _case(7)
    with pytest.raises(ValueError, match="item_chunk"):
        ChunkedRanking(41, rel, nxt, item_chunk=0)
    with pytest.raises(ValueError, match=r"must be \[U=23, 10\]"):
        ChunkedRanking(41, rel, nxt, item_chunk=10).run(lambda lo, hi: scores[:, lo : hi + 1])
    bad = scores.clone()
    bad[3, 40] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        ChunkedRanking(41, rel, nxt, item_chunk=10).run(lambda lo, hi: bad[:, lo:hi])
    with pytest.raises(ValueError, match="non-finite"):  # the next item itself excluded
        ChunkedRanking(41, rel, nxt, exclude=nxt[:, None], item_chunk=10).run(lambda lo, hi: scores[:, lo:hi])
    with pytest.raises(ValueError, match="eval.item_chunk"):
        EvalConfig(item_chunk=0)
    ranking = ChunkedRanking(41, rel, nxt, item_chunk=10)
    with pytest.raises(RuntimeError, match="not been called"):  # a scorer that never called its sink
        ranking.result()
    ranking.run(lambda lo, hi: scores[:, lo:hi])
    with pytest.raises(RuntimeError, match="twice"):
        ranking.run(lambda lo, hi: scores[:, lo:hi])


# --------------------------------------------------------------------------- the evaluation


class MatrixScorer:
    """Fixed scores per user, the user known by its first item; ``chunked`` decides which call it offers.
    Asking a chunked one for the full matrix fails the test."""

    def __init__(self, table: torch.Tensor, chunked: bool) -> None:
        self.table, self.widths = table, []
        if chunked:
            self.score_chunks = self._score_chunks

    def _rows(self, batch: MetaBatch) -> torch.Tensor:
        return batch.item_ids[:, 1] - 1  # position 0 is BOS; a user's first item is its index + 1

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        if hasattr(self, "score_chunks"):
            raise AssertionError("the chunked evaluation asked for a [U, V] score matrix")
        return self.table[self._rows(batch)]

    def _score_chunks(self, batch: MetaBatch, steps: int | None, sink) -> None:
        rows = self._rows(batch)

        def score_range(lo: int, hi: int) -> torch.Tensor:
            self.widths.append(hi - lo)
            return self.table[rows, lo:hi]

        sink(score_range)


def test_evaluation_of_200k_items_reads_chunks_and_equals_the_full_path() -> None:
    num_items, users = 200_000, 12
    rng = np.random.default_rng(0)
    seqs = [np.concatenate([[u + 1], rng.integers(users + 1, num_items + 1, 8)]) for u in range(users)]
    gen = torch.Generator().manual_seed(0)
    table = torch.randint(0, 50, (users, num_items), generator=gen).float()  # ties galore
    for u, s in enumerate(seqs):  # the next items near the top, so some hits at k = 10/20
        table[u, s[3:6] - 1] = 60.0
    kw = dict(shots=[1, 3], support_max=5, num_relevant=4, ks=(10, 20), batch_users=5)
    chunked = MatrixScorer(table, chunked=True)
    got = evaluate_cold_start(chunked, num_items, seqs, item_chunk=4096, **kw)
    want = evaluate_cold_start(MatrixScorer(table, chunked=False), num_items, seqs, **kw)
    assert max(chunked.widths) == 4096 and len(chunked.widths) == 2 * 2 * 3 * math.ceil(num_items / 4096)
    for k in (1, 3):
        assert list(got[k]) == list(want[k])
        for name in want[k]:
            np.testing.assert_array_equal(got[k][name], want[k][name], err_msg=name)
    assert got[3]["hr@10"].sum() > 0


def test_model_chunks_equal_score_all_and_adapting_scorer_checks_every_chunk(tiny_cfg, synth_data) -> None:
    tiny_cfg.model.adapters = ["lowrank", "bias", "itemlr"]  # itemlr: the table's chunks carry F's rows
    torch.manual_seed(0)
    model = SeqRecommender(tiny_cfg.model, synth_data.num_items).double().eval()
    learner = MetaLearner(model, build_algorithm(tiny_cfg.meta, model).double())
    batch = prefix_batch(synth_data.valid[:6], 3, 5, bos_id(synth_data.num_items))
    full = learner.score(batch, 2)
    parts: list[torch.Tensor] = []
    learner.score_chunks(batch, 2, lambda score_range: parts.extend(score_range(lo, lo + 7) for lo in (0, 7)))
    torch.testing.assert_close(torch.cat(parts, 1), full[:, :14])

    # A diverged adaptation is caught on the chunked path too, before it reaches the metrics.
    scorer = AdaptingScorer(model, tiny_cfg.meta.algorithm, inner_lr=1e30)
    with pytest.raises(Diverged):
        scorer.score_chunks(batch, 10, lambda score_range: score_range(0, synth_data.num_items))


PEAK_SCRIPT = textwrap.dedent(
    """
    import json
    from pathlib import Path

    import torch
    from metarec_dist.metrics.ranking import ChunkedRanking

    torch.set_num_threads(1)  # many small ops: no thread-pool waits on a loaded machine
    torch.manual_seed(0)
    U, V, D, CHUNK = 16, 1_000_000, 32, 4096
    table, hidden = torch.randn(V, D), torch.randn(U, D)
    rel, nxt, excl = torch.randint(0, V, (U, 10)), torch.randint(0, V, (U,)), torch.randint(0, V, (U, 5))
    excl[excl == nxt[:, None]] = -1

    def peak_mb():
        # Linux: reset the high-water mark to the current resident size, so each step is measured alone.
        Path("/proc/self/clear_refs").write_text("5")
        return hwm_mb()

    def hwm_mb():
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    def chunked(n):
        r = ChunkedRanking(n, rel % n, nxt % n, exclude=excl % n, item_chunk=CHUNK)
        r.run(lambda lo, hi: hidden @ table[lo:hi].T)
        return r.result()

    chunked(3 * CHUNK)  # one-time allocations (thread pools, allocator arenas) out of the measurement
    base = peak_mb()
    chunked(V)
    chunked_mb = hwm_mb() - base
    base = peak_mb()
    full = hidden @ table.T  # what the full path starts from
    print(json.dumps({"chunked_mb": chunked_mb, "full_matrix_mb": hwm_mb() - base}))
    """
)


def test_peak_memory_is_bounded_by_the_chunk() -> None:
    """16 users x 1,000,000 items: a full score matrix is 64 MB, a chunk 0.25 MB. Measured as the growth of
    the peak resident memory (Linux's VmHWM, reset before each step) of a fresh process, which sees torch's
    allocations: the chunked evaluation adds less than half a full matrix (allocator noise is a few MB), and
    the measurement does see a full matrix."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident memory")
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert mb["full_matrix_mb"] > 55, mb
    assert mb["chunked_mb"] < 32, mb
