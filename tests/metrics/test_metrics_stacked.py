"""The stacked grid: a cell trained inside a stack is the lone cell, to float rounding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from augment.metrics import downstream, stacked
from augment.metrics.classifier_training import _as_float, _Batches, train_classifier
from augment.metrics.downstream import prepare, run_cell
from augment.metrics.regimes import REGIMES
from augment.metrics.stacked import StackedBatches, StackedSmallCNN, fit_score_many
from augment.models.classifier import SmallCNN
from test_metrics_downstream import ev, make_data, synthetic

STRIP = downstream.TIMING_KEYS


def rows(cells: list[dict]) -> list[dict]:
    return [{k: v for k, v in c.items() if k not in STRIP} for c in cells]


def a_plan(**kw) -> downstream.Plan:
    data = make_data(k=3, n_train=30, n_test=24)
    images, labels = synthetic(per_class=12)
    images = (images.float() * torch.rand(images.shape, generator=torch.Generator().manual_seed(1))).to(torch.uint8)
    return prepare(data, images, labels, ev(**kw), map_fn=map)


@pytest.mark.parametrize("size", [8, 28])
def test_a_stack_computes_each_lone_networks_logits(size: int) -> None:
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(SmallCNN(4, 1, size).eval())
    stack = StackedSmallCNN(nets).eval()
    x = [torch.randn(5, 1, size, size, generator=torch.Generator().manual_seed(10 + g)) for g in range(3)]
    logits = stack(torch.cat(x, dim=1))
    assert logits.shape == (3, 5, 4)
    for g, net in enumerate(nets):
        torch.testing.assert_close(logits[g], net(x[g]), atol=1e-5, rtol=1e-5)
    # Unstacking gives the very weights back.
    for net, back in zip(nets, stack.unstack(), strict=True):
        for a, b in zip(net.state_dict().values(), back.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_a_stack_refuses_networks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="differ in architecture"):
        StackedSmallCNN([SmallCNN(3, 1, 8), SmallCNN(4, 1, 8)])
    with pytest.raises(TypeError):
        StackedSmallCNN([])


@pytest.mark.parametrize(
    ("classic", "until", "sampling", "on_synthetic"),
    [
        ("crop", 1.0, "natural", True),
        ("crop+flip+affine", 1.0, "natural", True),
        ("crop", 0.5, "natural", True),
        ("crop", 1.0, "balance", True),
        ("crop+flip+affine", 1.0, "natural", False),
    ],
)
def test_each_cell_in_a_stack_gets_the_lone_cells_batches_bit_for_bit(
    classic: str, until: float, sampling: str, on_synthetic: bool
) -> None:
    plan = a_plan(classic=[classic], confidence_threshold=None)
    plan = dataclasses.replace(
        plan,
        synthetic_share=0.25,
        synthetic_until=until,
        steps=4,
        classic_sampling=sampling,
        classic_on_synthetic=on_synthetic,
    )
    plan.gan_real_sampling = "baseline" if sampling == "balance" else "natural"  # the GAN regimes' real draws too
    jobs = [(plan, regime, seed, "test") for regime in REGIMES for seed in (0, 1)]
    both = StackedBatches(jobs, torch.device("cpu"))
    lone = [_Batches(p, regime, torch.Generator().manual_seed(seed)) for p, regime, seed, _ in jobs]
    for _step in range(4):  # with until 0.5: two steps with synthetic images, two real-only
        x, targets = both()
        b = plan.batch_size
        assert x.shape == (b, len(jobs), 8, 8)
        for g, draws in enumerate(lone):
            want_x, want_y = draws()
            assert torch.equal(x[:, g : g + 1], want_x), jobs[g][1]
            assert torch.equal(targets[g], want_y)


def test_soft_labels_and_a_filtered_pool_keep_each_cells_targets() -> None:
    data = make_data(k=3, n_train=30, n_test=24)
    images, labels = synthetic(per_class=12)
    plan = prepare(data, images, labels, ev(soft_labels=True, confidence_threshold=0.0), map_fn=map)
    # A pool filter that drops every other image: the stacked gather must map pool rows back.
    plan.synthetic_confidence = (torch.arange(len(labels)) % 2).float()
    plan.confidence_threshold = 0.5
    jobs = [(plan, "real+gan", 0, "test"), (plan, "gan-only", 1, "test"), (plan, "real", 2, "test")]
    both = StackedBatches(jobs, torch.device("cpu"))
    lone = [_Batches(p, regime, torch.Generator().manual_seed(seed)) for p, regime, seed, _ in jobs]
    x, targets = both()
    for g, draws in enumerate(lone):
        want_x, want_y = draws()
        assert torch.equal(x[:, g : g + 1], want_x)
        assert torch.equal(targets[g], want_y)
    assert targets[0].shape == (plan.batch_size, 3) and targets[2].dtype == torch.int64


def test_one_stacked_step_gives_the_lone_cells_logits() -> None:
    plan = dataclasses.replace(a_plan(classic=["crop+flip"]), steps=1, threads=1)
    jobs = [(plan, regime, seed, "test") for regime in ("real", "real+classic", "real+gan+classic") for seed in (0, 1)]
    model, _ = stacked._train(jobs, torch.device("cpu"), None)
    x = _as_float(plan.test_images)
    got = model(x.repeat(1, len(jobs), 1, 1))
    for g, (p, regime, seed, _) in enumerate(jobs):
        lone, _ = train_classifier(p, regime, seed)
        with torch.no_grad():
            torch.testing.assert_close(got[g], lone(x), atol=1e-5, rtol=1e-5)


def test_stacked_cells_score_as_lone_cells_and_repeat_exactly() -> None:
    plan = dataclasses.replace(a_plan(classic=["crop"]), steps=40, batch_size=16, threads=1)
    jobs = [(plan, regime, seed, "test") for regime in REGIMES for seed in (0, 1)]
    first = fit_score_many(jobs)
    assert [(c["regime"], c["seed"], c["split"]) for c in first] == [(r, s, "test") for _, r, s, _ in jobs]
    lone = [run_cell(plan, regime, seed) for _, regime, seed, _ in jobs]
    for a, b in zip(first, lone, strict=True):
        assert a["accuracy"] == b["accuracy"], (a["regime"], a["seed"])
        assert a["confusion"] == b["confusion"]
        assert (a["images_real"], a["images_synthetic"], a["classic"]) == (
            b["images_real"],
            b["images_synthetic"],
            b["classic"],
        )
    assert rows(fit_score_many(jobs)) == rows(first)  # same jobs, same numbers


def test_jobs_split_into_stacks_and_other_classifiers_train_alone() -> None:
    plan = dataclasses.replace(a_plan(), steps=2, batch_size=8, threads=1)
    resnet = dataclasses.replace(plan, classifier="resnet18")
    jobs = [
        (plan, "real", 0, "test"),
        (resnet, "real", 0, "test"),
        (plan, "real", 1, "val"),
        (plan, "real+gan", 2, "test"),
    ]
    out = fit_score_many(jobs, max_cells=1)
    assert [(c["seed"], c["split"]) for c in out] == [(0, "test"), (0, "test"), (1, "val"), (2, "test")]
    assert sum(sum(row) for row in out[2]["confusion"]) == len(plan.val_labels)
    assert sum(sum(row) for row in out[0]["confusion"]) == len(plan.test_labels)
    assert rows([out[1]]) == rows([run_cell(resnet, "real", 0)])
    # Timing: a stack's cells ran in one wall-clock span; each cell's share of it is its seconds.
    for c in out:
        assert c["started_at"] <= c["ended_at"] and c["seconds"] <= c["ended_at"] - c["started_at"] + 1e-6


def test_the_default_grid_and_selection_are_stacked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = stacked.train_stack

    def spy(jobs, bar=None):
        calls.append(len(jobs))
        return real(jobs, bar)

    monkeypatch.setattr(stacked, "train_stack", spy)
    data = make_data()
    plan = prepare(data, *synthetic(), ev(classic=["crop", "crop+flip"], select_seeds=2))
    assert calls == [4]  # the 2 policies x 2 selection seeds: one stack
    cells = list(downstream.run_grid(plan))
    assert calls == [4, len(plan.regimes) * len(plan.seeds)]
    assert [(c["regime"], c["seed"]) for c in cells] == [(r, s) for r in plan.regimes for s in plan.seeds]


def test_bf16_cells_stack_apart_from_fp32_ones_and_train_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    dtypes: set[torch.dtype] = set()
    real_stack, real_init = stacked.train_stack, StackedSmallCNN.__init__

    def spy(jobs, bar=None):
        sizes.append(len(jobs))
        return real_stack(jobs, bar)

    def hooked(self, nets):
        real_init(self, nets)
        # The grouped convolution's output while training (predictions are fp32 in every precision).
        self.body[0][0].register_forward_hook(lambda m, _i, out: dtypes.add(out.dtype) if m.training else None)

    monkeypatch.setattr(stacked, "train_stack", spy)
    monkeypatch.setattr(StackedSmallCNN, "__init__", hooked)
    fp32 = dataclasses.replace(a_plan(), steps=6, batch_size=8)
    bf16 = dataclasses.replace(fp32, precision="bf16")
    jobs = [(fp32, "real", 0, "test"), (bf16, "real", 0, "test"), (bf16, "real+gan", 1, "test")]
    fit_score_many(jobs)
    assert sorted(sizes) == [1, 2]  # one stack per precision
    assert dtypes == {torch.float32, torch.bfloat16}
    sizes.clear()
    dtypes.clear()
    first = fit_score_many(jobs[1:])
    assert dtypes == {torch.bfloat16} and rows(fit_score_many(jobs[1:])) == rows(first)
