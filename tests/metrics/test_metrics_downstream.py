"""The downstream grid: equal steps, batch composition, determinism, val-only selection, verdicts."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from augment.config import EvaluateConfig
from augment.data import ImageSet, PreparedData
from augment.errors import ConfigError
from augment.metrics import classifier_training as training
from augment.metrics import downstream
from augment.metrics.classic import classic_augment
from augment.metrics.classifier_training import per_class_synthetic_share, synthetic_class_probs, train_classifier
from augment.metrics.downstream import prepare, run_cell
from augment.metrics.regimes import REGIMES
from augment.metrics.report import _downstream_lines
from augment.metrics.verdict import mean_ci, summarize, verdict


def untimed(cell: dict) -> dict:
    """A cell without its timing (everything else is a function of its inputs)."""
    return {k: v for k, v in cell.items() if k not in downstream.TIMING_KEYS}


def make_data(k: int = 3, n_train: int = 24, n_val: int = 6, n_test: int = 12, seed: int = 0) -> PreparedData:
    """Separable 8x8 classes: class c lights up row band c (plus noise)."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int, tag: str) -> ImageSet:
        labels = torch.arange(n) % k
        x = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
        for i, c in enumerate(labels.tolist()):
            x[i, 0, 2 * c : 2 * c + 2] += 180
        return ImageSet(x.to(torch.uint8), labels, [f"{tag}{i}" for i in range(n)])

    return PreparedData([str(c) for c in range(k)], split(n_train, "tr"), split(n_val, "va"), split(n_test, "te"), "fp")


def synthetic(k: int = 3, per_class: int = 10, value: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(k).repeat_interleave(per_class)
    return torch.full((k * per_class, 1, 8, 8), value, dtype=torch.uint8), labels


def ev(**kw) -> EvaluateConfig:
    base = dict(steps=6, batch_size=8, seeds=2, classic=["crop"], threads=1)
    return EvaluateConfig(**{**base, **kw})


class CountingAdamW(torch.optim.AdamW):
    steps = 0

    def step(self, *a, **k):
        CountingAdamW.steps += 1
        return super().step(*a, **k)


def test_every_regime_gets_the_same_optimizer_steps_and_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.optim, "AdamW", CountingAdamW)
    data = make_data()
    plan = prepare(data, *synthetic(), ev(steps=7))
    for regime in REGIMES:
        CountingAdamW.steps = 0
        cell = run_cell(plan, regime, 0)
        assert CountingAdamW.steps == 7, regime
        assert cell["steps"] == 7 and cell["images_real"] + cell["images_synthetic"] == 7 * 8
    assert run_cell(plan, "gan-only", 0)["images_real"] == 0
    assert run_cell(plan, "real+gan", 0)["images_synthetic"] == 4 * 7


def test_batches_draw_real_and_synthetic_as_the_regime_says() -> None:
    data = make_data()
    data.train.images.clamp_(max=250)  # real pixels < 255; synthetic pixels are all 255
    plan = prepare(data, *synthetic(), ev(synthetic_share=0.25, batch_size=16))
    for regime, want in (("real", 0), ("real+gan", 4), ("gan-only", 16)):
        batches = training._Batches(plan, regime, torch.Generator().manual_seed(0))
        x, y = batches()
        is_syn = (x == 1.0).flatten(1).all(dim=1)
        assert int(is_syn.sum()) == want, regime
        assert len(y) == 16


def test_a_real_data_finish_ends_the_synthetic_draws_and_keeps_the_first_steps() -> None:
    """synthetic_until=0.5: the real+gan regimes' last half of the steps draws real images only, the
    first half draws exactly the batches of a run without a finish, and the other regimes are untouched."""
    data = make_data()
    data.train.images.clamp_(max=250)  # real pixels < 255; synthetic pixels are all 255
    steps = 8
    full = prepare(data, *synthetic(), ev(steps=steps, synthetic_share=0.5))
    half = dataclasses.replace(full, synthetic_until=0.5)
    for regime in REGIMES:
        a = training._Batches(full, regime, torch.Generator().manual_seed(0))
        b = training._Batches(half, regime, torch.Generator().manual_seed(0))
        syn_per_step = []
        for step in range(steps):
            before = b.seen_synthetic
            (xa, ya), (xb, yb) = a(), b()
            syn_per_step.append(b.seen_synthetic - before)
            if regime == "real+gan":  # no classic crop: the synthetic images are the all-255 ones
                assert int((xb == 1.0).flatten(1).all(dim=1).sum()) == syn_per_step[-1]
            if step < steps // 2 or regime not in ("real+gan", "real+gan+classic"):
                assert torch.equal(xa, xb) and torch.equal(ya, yb), (regime, step)
        if regime in ("real+gan", "real+gan+classic"):
            assert syn_per_step == [4] * 4 + [0] * 4, regime
    cell = run_cell(half, "real+gan", 0)
    assert (cell["images_synthetic"], cell["images_real"]) == (4 * 4, 4 * 4 + 8 * 4)
    assert cell["synthetic_until"] == 0.5 and run_cell(half, "gan-only", 0)["synthetic_until"] is None
    assert run_cell(half, "gan-only", 0)["images_synthetic"] == steps * 8
    assert training.synthetic_stop(dataclasses.replace(half, synthetic_until=0.01)) == 1  # one step at least
    assert training.synthetic_stop(full) is None
    with pytest.raises(ConfigError, match="synthetic_until"):
        training.synthetic_stop(dataclasses.replace(half, synthetic_until=0.0))
    with pytest.raises(ValueError, match="synthetic_until"):
        ev(synthetic_until=1.5)
    summary = summarize(half, [run_cell(half, r, 0) for r in ("real", "real+classic", "real+gan")])
    assert summary["synthetic_until"] == 0.5
    report = "\n".join(_downstream_lines(summary))
    assert "synthetic images in the first 50% of the 8 steps only" in report


def test_batches_are_assembled_on_the_classifiers_device() -> None:
    """On a GPU the images stay on the device and only the CPU generator's small draws cross over.
    The meta device stands in for CUDA here: like CUDA it refuses any op that mixes its tensors
    with CPU ones, so a CPU tensor left in the batch path fails this test. Meta tensors hold no
    values; that the draws are the same on every device shows in the generators staying in step."""
    data = make_data()
    plan = prepare(data, *synthetic(), ev(synthetic_share=0.25, batch_size=16, classic=["crop+flip+affine"]))
    for regime in REGIMES:
        cpu = training._Batches(plan, regime, torch.Generator().manual_seed(3))
        meta = training._Batches(plan, regime, torch.Generator().manual_seed(3), "meta")
        for _ in range(2):
            (xc, yc), (xm, ym) = cpu(), meta()
            assert xm.device.type == ym.device.type == "meta", regime
            assert xm.shape == xc.shape == (16, 1, 8, 8) and xm.dtype == xc.dtype
            assert ym.shape == yc.shape == (16,)
        # Same number of draws from the generator on both devices: the streams are still in step.
        assert torch.equal(cpu.gen.get_state(), meta.gen.get_state()), regime


def test_synthetic_classes_top_up_the_tail() -> None:
    assert torch.allclose(synthetic_class_probs([10, 10, 10], [5, 5, 5], 0.5, "balance"), torch.full((3,), 1 / 3))
    # Feasible: the synthetic half makes the whole batch uniform.
    q = synthetic_class_probs([60, 30, 10], [5, 5, 5], 0.5, "balance")
    assert torch.allclose(0.5 * torch.tensor([0.6, 0.3, 0.1]) + 0.5 * q, torch.full((3,), 1 / 3))
    # Infeasible (the head alone fills more than 1/K): the head gets no synthetic images.
    q = synthetic_class_probs([80, 15, 5], [5, 5, 5], 0.5, "balance")
    assert q[0] == 0 and q[2] > q[1] > 0
    assert synthetic_class_probs([60, 30, 10], [5, 0, 5], 0.5, "uniform").tolist() == [0.5, 0.0, 0.5]
    with pytest.raises(ConfigError, match="no synthetic images"):
        synthetic_class_probs([1, 1], [0, 0], 0.5, "balance")


def _drawn_class_shares(plan: downstream.Plan, regime: str, batches: int = 200) -> torch.Tensor:
    draws = training._Batches(plan, regime, torch.Generator().manual_seed(0))
    counts = torch.zeros(plan.num_classes)
    for _ in range(batches):
        idx, _pick, _params = draws.draw()
        counts += torch.bincount(plan.train_labels[idx], minlength=plan.num_classes)
    return counts / counts.sum()


def test_class_balanced_classic_sampling_draws_every_class_equally_and_only_for_the_baseline() -> None:
    data = long_tail(make_data(n_train=90), [30, 6, 3])
    plan = prepare(data, *synthetic(), ev(batch_size=16, classic_sampling=["balance"]))
    assert plan.classic_sampling == "balance" and "classic" not in plan.selection  # one candidate: no choice
    # 3200 draws: each share within ~5 standard deviations (0.008) of 1/3.
    assert torch.allclose(_drawn_class_shares(plan, "real+classic"), torch.full((3,), 1 / 3), atol=0.04)
    natural = torch.tensor([30, 6, 3]) / 39
    assert torch.allclose(_drawn_class_shares(plan, "real"), natural, atol=0.04)  # real-only keeps the split's draw
    natural_plan = dataclasses.replace(plan, classic_sampling="natural")
    assert torch.allclose(_drawn_class_shares(natural_plan, "real+classic"), natural, atol=0.04)
    # Every image of the 3-image tail class is drawn, and only real images of that class stand for it.
    draws = training._Batches(plan, "real+classic", torch.Generator().manual_seed(1))
    seen = torch.cat([draws.draw()[0] for _ in range(50)])
    tail = set(torch.nonzero(plan.train_labels == 2).flatten().tolist())
    assert set(seen[plan.train_labels[seen] == 2].tolist()) == tail
    cell = run_cell(plan, "real+classic", 0)
    assert cell["real_draw"] == "balance" and cell["images_real"] == 6 * 16
    assert run_cell(plan, "real+gan+classic", 0)["real_draw"] == "natural"


def test_the_classic_baselines_sampling_is_chosen_on_val_and_named_in_the_verdict() -> None:
    data = long_tail(make_data(n_train=90), [30, 6, 3])
    cfg = ev(classic=["crop", "crop+flip"], seeds=3)
    plan = prepare(data, *synthetic(), cfg)
    choice = plan.selection["classic"]
    assert list(choice["scores"]) == ["crop", "crop+flip", "crop, class-balanced", "crop+flip, class-balanced"]
    assert choice["scores"][choice["chosen"]] == max(choice["scores"].values())
    assert (choice["policy"], choice["sampling"]) == (plan.classic, plan.classic_sampling)
    # How far the val split can tell them apart: the pick's binomial SE on these images, and its lead.
    pick_cell = downstream._fit_score(plan, "real+classic", plan.selection["seeds"][0], "val")
    counts = torch.bincount(data.val.labels, minlength=3).tolist()
    assert choice["se"] == pytest.approx(training.balanced_accuracy_se(pick_cell["per_class_recall"], counts))
    ranked = sorted(choice["scores"].values())
    lead = ranked[-1] - ranked[-2]  # the report derives it from the scores
    assert choice["se"] > 0.1  # a few val images
    noted = "\n".join(_downstream_lines({**summarize(plan, []), "selection": plan.selection}))
    assert ("cannot tell these baselines apart" in noted) == (lead <= choice["se"])
    assert f"({100 * lead:.1f} pts)" in noted
    clear = {**plan.selection, "classic": {**choice, "se": lead - 0.01}}
    assert "cannot tell" not in "\n".join(_downstream_lines({**summarize(plan, []), "selection": clear}))
    poisoned = dataclasses.replace(
        data, test=ImageSet(torch.full_like(data.test.images, 7), torch.zeros_like(data.test.labels), data.test.ids)
    )
    assert prepare(poisoned, *synthetic(), cfg).selection == plan.selection  # chosen without the test split
    plan = dataclasses.replace(plan, classic="crop", classic_sampling="balance")
    cells = [run_cell(plan, r, s) for r in ("real", "real+classic", "real+gan+classic") for s in plan.seeds]
    down = summarize(plan, cells)
    assert down["classic_sampling"] == "balance"
    assert "real+classic with crop, class-balanced" in down["verdict"]["text"]
    # A balanced train split leaves the class-balanced candidates out, and says so.
    even = prepare(make_data(), *synthetic(), cfg)
    assert list(even.selection["classic"]["scores"]) == ["crop", "crop+flip"] and even.classic_sampling == "natural"
    assert "balanced" in even.selection["classic_sampling_note"]
    assert "class-balanced resampling left out" in "\n".join(_downstream_lines(summarize(even, [])))


def test_gan_regimes_can_draw_their_real_images_as_the_baseline_does() -> None:
    data = long_tail(make_data(n_train=90), [30, 6, 3])
    data.train.images.clamp_(max=250)  # real pixels < 255; synthetic pixels are all 255
    cfg = ev(batch_size=16, synthetic_share=0.25, classic_sampling=["balance"], gan_real_sampling="baseline")
    plan = prepare(data, *synthetic(), cfg)
    # The real part is class-balanced, so the synthetic part needs no top-up: uniform classes, and every
    # class's images are a quarter synthetic.
    assert torch.allclose(_drawn_class_shares(plan, "real+gan+classic"), torch.full((3,), 1 / 3), atol=0.04)
    assert per_class_synthetic_share(plan) == pytest.approx({"0": 0.25, "1": 0.25, "2": 0.25})
    draws = training._Batches(plan, "real+gan", torch.Generator().manual_seed(0))
    assert torch.allclose(draws.q, torch.full((3,), 1 / 3))
    x, _ = draws()
    assert int((x == 1.0).flatten(1).all(dim=1).sum()) == 4  # the share is unchanged
    assert run_cell(plan, "real+gan", 0)["real_draw"] == "balance"
    assert run_cell(plan, "gan-augmenter", 0)["real_draw"] == "natural"  # the deployed regimes keep the split's draw
    # With the natural default the same plan's GAN regimes draw the split's frequencies and top the tail up.
    natural = dataclasses.replace(plan, gan_real_sampling="natural")
    assert per_class_synthetic_share(natural)["2"] > 0.5 > per_class_synthetic_share(natural)["0"]
    down = summarize(plan, [run_cell(plan, r, s) for r in ("real+classic", "real+gan") for s in plan.seeds])
    assert down["gan_real_sampling"] == "baseline"
    assert "real images drawn as the classic baseline draws them (class-balanced)" in "\n".join(_downstream_lines(down))


@pytest.mark.parametrize("backend", ["torch", "torchvision"])
def test_real_gan_classic_can_leave_its_synthetic_images_as_generated(backend: str) -> None:
    data = make_data(n_train=60)
    data.train.images.clamp_(max=250)  # real pixels < 255; synthetic pixels are all 255
    cfg = ev(batch_size=16, synthetic_share=0.25, classic=["crop+flip+affine"], classic_backend=backend)
    plan = prepare(data, *synthetic(), cfg)
    only_real = dataclasses.replace(plan, classic_on_synthetic=False)
    whole = training._Batches(plan, "real+gan+classic", torch.Generator().manual_seed(3))
    real = training._Batches(only_real, "real+gan+classic", torch.Generator().manual_seed(3))
    n_real = 12  # 16 images, a quarter synthetic; a batch's real rows come first
    for _ in range(3):
        (x_all, y_all), (x_real, y_real) = whole(), real()
        # The same draws: the real rows bit for bit; the synthetic rows untouched (a crop or an affine
        # brings the -1 background in on most of them where the policy applies to the whole batch).
        assert torch.equal(x_real[:n_real], x_all[:n_real]) and torch.equal(y_real, y_all)
        assert bool((x_real[n_real:] == 1.0).all())
        assert int((x_all[n_real:] == 1.0).flatten(1).all(dim=1).sum()) < 4
    # Other regimes do not change with the option.
    a = training._Batches(plan, "real+classic", torch.Generator().manual_seed(3))()
    b = training._Batches(only_real, "real+classic", torch.Generator().manual_seed(3))()
    assert torch.equal(a[0], b[0])
    down = summarize(only_real, [run_cell(only_real, r, 0) for r in ("real+classic", "real+gan+classic")])
    assert down["classic_on_synthetic"] is False
    assert "applies the classic policy to its real images only" in "\n".join(_downstream_lines(down))
    assert "real images only" not in "\n".join(_downstream_lines(summarize(plan, [])))


def test_classic_sampling_rejects_an_empty_repeated_or_unknown_list() -> None:
    for bad in ([], ["balance", "balance"], ["uniform"]):
        with pytest.raises(ValueError, match="classic_sampling"):
            EvaluateConfig(classic_sampling=bad)


def test_classic_ops_keep_pixels_or_fill_the_background() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    crop = classic_augment(x, "crop", g)
    assert crop.shape == x.shape
    # A crop with 1 pixel of padding: every output pixel is an input pixel or the -1 fill.
    values = set(x.flatten().tolist()) | {-1.0}
    assert set(crop.flatten().tolist()) <= values
    same = classic_augment(x, "crop+flip+affine", torch.Generator().manual_seed(5))
    assert torch.equal(same, classic_augment(x, "crop+flip+affine", torch.Generator().manual_seed(5)))
    flips = classic_augment(x, "flip", torch.Generator().manual_seed(1))
    for a, b in zip(flips, x, strict=True):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    assert torch.equal(classic_augment(x, "none", g), x)
    with pytest.raises(ConfigError, match="bad policy"):
        classic_augment(x, "crop+zoom", g)


def test_a_cell_leaves_the_thread_setting_as_found() -> None:
    before = torch.get_num_threads()
    plan = prepare(make_data(), *synthetic(), ev(threads=1))
    run_cell(plan, "real", 0)
    assert torch.get_num_threads() == before


def test_cells_are_deterministic_and_the_plan_pickles() -> None:
    plan = prepare(make_data(), *synthetic(), ev())
    a = run_cell(plan, "real+gan+classic", 3)
    b = run_cell(pickle.loads(pickle.dumps(plan)), "real+gan+classic", 3)
    a, b = untimed(a), untimed(b)
    assert a == b
    c = run_cell(plan, "real+gan+classic", 4)
    assert c["seed"] == 4
    # Another seed is another classifier (init, batches, augmentation); on this tiny test split its
    # scores may tie, its weights cannot.
    wa = train_classifier(plan, "real+gan+classic", 3)[0].state_dict()
    wb = train_classifier(plan, "real+gan+classic", 3)[0].state_dict()
    wc = train_classifier(plan, "real+gan+classic", 4)[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_selection_uses_the_validation_split_only() -> None:
    cfg = ev(classic=["crop", "crop+flip"], tune=True, tune_shares=[0.25, 0.75], tune_thresholds=[None, 0.5])
    data = make_data()
    syn = (data.train.images.clone(), data.train.labels.clone())  # plausible images: the filter keeps some
    plan = prepare(data, *syn, cfg)
    poisoned = dataclasses.replace(
        data, test=ImageSet(torch.full_like(data.test.images, 7), torch.zeros_like(data.test.labels), data.test.ids)
    )
    plan2 = prepare(poisoned, *syn, cfg)
    assert plan.selection == plan2.selection  # the test split changed nothing that was chosen
    assert plan.selection["split"] == "val"
    assert plan.classic in ("crop", "crop+flip")
    assert plan.synthetic_share in (0.25, 0.75) and plan.confidence_threshold in (None, 0.5)
    assert len(plan.selection["tune"]["candidates"]) == 4
    assert set(plan.seeds).isdisjoint(plan.selection["seeds"])


def test_tuning_skips_thresholds_that_keep_nothing() -> None:
    cfg = ev(tune=True, tune_shares=[0.5], tune_thresholds=[None, 1.0])
    plan = prepare(make_data(), *synthetic(), cfg)  # all-white images: nothing reaches p = 1.0
    cands = plan.selection["tune"]["candidates"]
    assert cands["share=0.5,threshold=1.0"]["balanced_accuracy"] is None
    assert plan.confidence_threshold is None


def test_selection_needs_a_validation_split() -> None:
    data = make_data(n_val=0)
    with pytest.raises(ConfigError, match="validation split"):
        prepare(data, *synthetic(), ev(classic=["crop", "crop+flip"]))
    prepare(data, *synthetic(), ev(classic=["crop"]))  # a single policy needs no choice


def test_confidence_filter_drops_images_the_real_classifier_rejects() -> None:
    plan = prepare(make_data(), *synthetic(), ev(confidence_threshold=0.0))
    assert len(plan.synthetic_pool()[1]) == 30
    assert plan.synthetic_confidence is not None and plan.synthetic_confidence.shape == (30,)
    strict = dataclasses.replace(plan, confidence_threshold=float(plan.synthetic_confidence.max()) + 1e-6)
    assert len(strict.synthetic_pool()[1]) == 0
    with pytest.raises(ConfigError, match="no synthetic images"):
        run_cell(strict, "real+gan", 0)


def test_a_cell_trains_from_its_train_spec_alone() -> None:
    """The grid adds nothing hidden to training: a plan's classifier is the one its TrainSpec fields
    alone give, bit for bit, and a spec needs no validation or test split (the extractor's case)."""
    data = make_data()
    plan = prepare(data, *synthetic(), ev(steps=5, confidence_threshold=0.2, classic=["crop", "crop+flip"]))
    spec = training.TrainSpec(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(training.TrainSpec)})
    assert not hasattr(spec, "test_images")
    for regime in ("real+classic", "real+gan+classic", "gan-augmenter"):
        a, _ = train_classifier(plan, regime, 3)
        b, _ = train_classifier(spec, regime, 3)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    bare = training.TrainSpec(data.class_names, data.train.images, data.train.labels, steps=2, batch_size=8)
    _, counters = train_classifier(bare, "real+classic", 0)
    assert counters == {
        "steps": 2,
        "batch_size": 8,
        "images_real": 16,
        "images_synthetic": 0,
        "classic": "crop",
        "real_draw": "natural",
    }
    with pytest.raises(ConfigError, match="needs synthetic images, the pool is empty"):
        train_classifier(bare, "gan-augmenter", 0)


def conv_dtypes_while_training(plan: downstream.Plan, regime: str = "real+gan+classic") -> set[torch.dtype]:
    """The dtypes the first convolution of a cell computes in during its training steps."""
    seen: set[torch.dtype] = set()
    real_init = training.init_classifier

    def hooked(spec, seed):
        net = real_init(spec, seed)
        net.body[0][0].register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        return net

    training.init_classifier = hooked
    try:
        model, _ = train_classifier(plan, regime, 0)
    finally:
        training.init_classifier = real_init
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights and optimizer stay fp32
    return seen


def test_nhwc_gives_a_batch_nhwc_strides_even_with_one_channel() -> None:
    one = torch.rand(4, 1, 5, 6)
    assert one.contiguous(memory_format=torch.channels_last).stride() == (30, 30, 6, 1)  # torch keeps NCHW's
    got = training.nhwc(one)
    assert got.stride() == (30, 1, 6, 1) and torch.equal(got, one) and got.data_ptr() == one.data_ptr()
    three = torch.rand(4, 3, 5, 6)
    assert training.nhwc(three).stride() == (90, 1, 18, 3) and torch.equal(training.nhwc(three), three)
    sliced = torch.rand(4, 3, 5, 6)[1:, 1:2]  # not dense: copied first
    assert training.nhwc(sliced).stride() == (30, 1, 6, 1) and torch.equal(training.nhwc(sliced), sliced)


def test_every_regimes_batches_reach_the_classifier_with_nhwc_strides() -> None:
    plan = prepare(make_data(), *synthetic(), ev(steps=2))
    strides: dict[str, set[tuple[int, ...]]] = {}
    real_init = training.init_classifier

    def hooked(spec, seed):
        net = real_init(spec, seed)
        net.body[0][0].register_forward_pre_hook(lambda _m, args: strides[regime].add(args[0].stride()))
        return net

    training.init_classifier = hooked
    try:
        for regime in REGIMES:
            strides[regime] = set()
            train_classifier(plan, regime, 0)
    finally:
        training.init_classifier = real_init
    assert strides == {regime: {(64, 1, 8, 1)} for regime in REGIMES}


def test_bf16_precision_trains_the_convolutions_in_bf16_and_repeats_exactly() -> None:
    data = make_data()
    fp32 = prepare(data, *synthetic(), ev(steps=8, precision="fp32"))
    bf16 = prepare(data, *synthetic(), ev(steps=8, precision="bf16"))
    assert conv_dtypes_while_training(fp32) == {torch.float32}
    assert conv_dtypes_while_training(bf16) == {torch.bfloat16}
    a, b = (train_classifier(bf16, "real+gan+classic", 0)[0].state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train_classifier(fp32, "real+gan+classic", 0)[0].state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)  # bf16 rounding reached the updates
    # Predictions are fp32 whatever the training precision.
    probs = training.predict_proba(train_classifier(bf16, "real", 0)[0], data.test.images)
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(dim=1), torch.ones(len(probs)))
    # The report says how the classifiers trained.
    assert "(bf16 autocast)" in "\n".join(_downstream_lines(summarize(bf16, [])))
    assert "autocast" not in "\n".join(_downstream_lines(summarize(fp32, [])))


def test_auto_precision_resolves_by_the_device_and_a_bad_one_is_named() -> None:
    from augment.devices import native_bf16

    plan = prepare(make_data(), *synthetic(), ev(precision="auto"))
    assert plan.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert (
        summarize(plan, list(downstream.run_grid(dataclasses.replace(plan, regimes=["real", "real+classic"]))))[
            "precision"
        ]
        == plan.precision
    )
    with pytest.raises(ConfigError, match="evaluate.precision must be auto, fp32 or bf16, got 'fp16'"):
        train_classifier(dataclasses.replace(plan, precision="fp16"), "real", 0)
    with pytest.raises(ValueError, match="precision"):
        ev(precision="fp16")


def logits_after_training(plan: downstream.Plan, regime: str, seed: int = 0) -> torch.Tensor:
    model, _ = train_classifier(plan, regime, seed)
    with torch.no_grad():
        return model(training._as_float(plan.test_images))


def test_one_hot_soft_labels_train_the_same_classifier_as_hard_labels() -> None:
    """The soft path is the same loss: probability targets that are one-hot rows of the synthetic
    labels give the hard-label classifier (same draws, same augmentation, same updates)."""
    data = make_data()
    plan = prepare(data, data.train.images.clone(), data.train.labels.clone(), ev(steps=8))
    one_hot = F.one_hot(plan.synthetic_labels, plan.num_classes).float()
    soft = dataclasses.replace(plan, soft_labels=True, synthetic_probs=one_hot)
    for regime in ("real+gan", "real+gan+classic", "gan-only"):
        hard_logits, soft_logits = logits_after_training(plan, regime), logits_after_training(soft, regime)
        assert (soft_logits - hard_logits).abs().max() < 1e-5, regime
    # The batch itself: the same images, targets the one-hot rows of the hard labels.
    (xh, yh), (xs, ys) = (
        training._Batches(p, "real+gan+classic", torch.Generator().manual_seed(2))() for p in (plan, soft)
    )
    assert torch.equal(xh, xs) and ys.shape == (8, 3) and torch.equal(ys, F.one_hot(yh, 3).float())


def test_soft_labels_change_only_what_the_synthetic_images_are_trained_on() -> None:
    plan = prepare(make_data(), *synthetic(), ev(soft_labels=True))
    assert plan.soft_labels and plan.synthetic_probs is not None and plan.synthetic_probs.shape == (30, 3)
    assert torch.allclose(plan.synthetic_probs.sum(dim=1), torch.ones(30))
    # One filter classifier serves both: the confidence is the probability of the image's own class.
    assert torch.equal(plan.synthetic_confidence, plan.synthetic_probs.gather(1, plan.synthetic_labels[:, None])[:, 0])
    assert plan.synthetic_probs.max() < 0.99  # all-white images: the real-trained filter is unsure
    hard = dataclasses.replace(plan, soft_labels=False)
    for regime in ("real+gan", "gan-only"):
        diff = (logits_after_training(plan, regime) - logits_after_training(hard, regime)).abs().max()
        assert diff > 1e-3, regime
    # Real images keep hard labels: regimes without synthetic images are unchanged bit for bit.
    for regime in ("real", "real+classic"):
        assert torch.equal(logits_after_training(plan, regime), logits_after_training(hard, regime)), regime
    # soft_labels=False ignores the probabilities: the very cell of a plan that never had them.
    bare = dataclasses.replace(hard, synthetic_probs=None, synthetic_confidence=None)
    a, b = run_cell(hard, "real+gan+classic", 3), run_cell(bare, "real+gan+classic", 3)
    a, b = untimed(a), untimed(b)
    assert a == b and a["soft_labels"] is False
    assert run_cell(plan, "real", 0)["soft_labels"] is None and run_cell(plan, "gan-only", 0)["soft_labels"] is True
    # Asked for without probabilities: a ConfigError that names the setting.
    with pytest.raises(ConfigError, match="soft_labels"):
        run_cell(dataclasses.replace(bare, soft_labels=True), "real+gan", 0)
    with pytest.raises(ValueError, match="synthetic_probs is"):
        run_cell(dataclasses.replace(plan, synthetic_probs=plan.synthetic_probs[:5]), "real+gan", 0)


def test_tuning_chooses_soft_labels_on_val_and_reports_them() -> None:
    """Synthetic images whose labels are all wrong, a filter classifier that knows better: soft
    labels win on the validation split, and the choice reaches the plan and the summary."""
    data = make_data(n_val=12)
    syn = (data.train.images.clone(), (data.train.labels + 1) % 3)
    cfg = ev(steps=10, tune=True, tune_shares=[0.75], tune_thresholds=[None], tune_soft_labels=[False, True])
    plan = prepare(data, *syn, cfg)
    tune = plan.selection["tune"]
    cands = tune["candidates"]
    assert list(cands) == ["share=0.75,threshold=None,soft_labels=False", "share=0.75,threshold=None,soft_labels=True"]
    assert [c["soft_labels"] for c in cands.values()] == [False, True]
    # Each recorded score is that candidate's val balanced accuracy (one select seed here).
    for row in cands.values():
        settings = {k: row[k] for k in ("synthetic_share", "confidence_threshold", "soft_labels")}
        redo = downstream._fit_score(dataclasses.replace(plan, **settings), tune["regime"], 100, "val")
        assert row["balanced_accuracy"] == redo["balanced_accuracy"]
    hard, soft = (c["balanced_accuracy"] for c in cands.values())
    assert soft > hard + 0.3  # wrong hard labels on 3/4 of every batch; the soft ones are right
    best = max(cands.values(), key=lambda row: row["balanced_accuracy"])
    assert tune["chosen"] == {"synthetic_share": 0.75, "confidence_threshold": None, "soft_labels": best["soft_labels"]}
    assert plan.soft_labels is True
    cells = [run_cell(plan, r, 0) for r in ("real+classic", "real+gan")]
    out = summarize(plan, cells)
    assert out["soft_labels"] is True and out["synthetic_share"] == 0.75
    assert [c["soft_labels"] for c in cells] == [None, True]
    assert out["synthetic_share_per_class"] == per_class_synthetic_share(plan)
    # Without tune the configured value is the plan's.
    assert prepare(data, *syn, ev(soft_labels=True)).soft_labels is True
    assert prepare(data, *syn, ev()).soft_labels is False


def long_tail(data: PreparedData, counts: list[int]) -> PreparedData:
    """``data`` with its train split cut to ``counts[c]`` images of class c."""
    tr = data.train
    idx = torch.cat([torch.nonzero(tr.labels == c).flatten()[:n] for c, n in enumerate(counts)])
    train = ImageSet(tr.images[idx], tr.labels[idx], [tr.ids[i] for i in idx.tolist()])
    return dataclasses.replace(data, train=train)


def test_per_class_synthetic_share_is_the_batch_expectation() -> None:
    data = long_tail(make_data(n_train=36), [12, 6, 3])
    data.train.images.clamp_(max=250)  # real pixels < 255; synthetic pixels are all 255
    plan = prepare(data, *synthetic(), ev(synthetic_share=0.75, batch_size=16))
    shares = per_class_synthetic_share(plan)
    assert list(shares) == ["0", "1", "2"] and all(0.0 <= v <= 1.0 for v in shares.values())
    assert shares["0"] < shares["1"] < shares["2"]  # the head gets the smallest synthetic fraction
    # By hand: 4 real images over r = (12, 6, 3) / 21; 12 synthetic over q from the balance formula.
    r = np.array([12, 6, 3]) / 21
    q = np.maximum(1 / 3 - 0.25 * r, 0)
    q /= q.sum()
    want = 12 * q / (12 * q + 4 * r)
    assert list(shares.values()) == pytest.approx(want.tolist(), abs=1e-6)
    # Empirically, over 200 drawn batches.
    batches = training._Batches(plan, "real+gan", torch.Generator().manual_seed(0))
    syn_n, all_n = np.zeros(3), np.zeros(3)
    for _ in range(200):
        x, y = batches()
        is_syn = (x == 1.0).flatten(1).all(dim=1).numpy()
        np.add.at(all_n, y.numpy(), 1)
        np.add.at(syn_n, y.numpy()[is_syn], 1)
    assert (syn_n / all_n).tolist() == pytest.approx(list(shares.values()), abs=0.04)
    # The filtered pool counts: a class the filter empties gets no synthetic images at all.
    conf = (plan.synthetic_labels != 2).float()
    filtered = dataclasses.replace(plan, synthetic_confidence=conf, confidence_threshold=0.5)
    assert per_class_synthetic_share(filtered)["2"] == 0.0 and per_class_synthetic_share(filtered)["1"] > shares["1"]


def test_the_filtered_pool_keeps_each_images_soft_label() -> None:
    data = make_data()
    syn = (data.train.images.clone(), data.train.labels.clone())  # distinct images: each can be found
    plan = prepare(data, *syn, ev(steps=10, confidence_threshold=0.4, soft_labels=True))
    pool_x, pool_y = plan.synthetic_pool()
    pool_p = plan.synthetic_pool_probs()
    assert 0 < len(pool_y) < len(syn[1]) and pool_p.shape == (len(pool_y), 3)
    assert (pool_p.gather(1, pool_y[:, None]) >= 0.4).all()
    # Each kept row is the filter classifier's output for that very image (retrained: deterministic).
    sel = plan.selection["filter"]
    model, _ = train_classifier(dataclasses.replace(plan, soft_labels=False), sel["regime"], sel["seed"])
    assert torch.allclose(training.predict_proba(model, pool_x), pool_p, atol=1e-6)
    # And in a drawn batch (no classic op in real+gan): every synthetic row's target is its image's.
    batches = training._Batches(plan, "real+gan", torch.Generator().manual_seed(1))
    x, y = batches()
    pool_f = training._as_float(pool_x)
    for xi, yi in zip(x[batches.n_real :], y[batches.n_real :], strict=True):
        (where,) = torch.nonzero((pool_f == xi).flatten(1).all(dim=1), as_tuple=True)
        assert len(where) == 1 and torch.equal(yi, pool_p[where[0]])
    assert torch.equal(y[: batches.n_real].sum(dim=1), torch.ones(batches.n_real))  # real rows: one-hot


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_scores_match_scikit_learn() -> None:
    from sklearn import metrics

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    y[y == 3] = 2  # class 3 absent from the labels, still predicted below
    p = torch.where(torch.rand(200, generator=g) < 0.6, y, torch.randint(0, 4, (200,), generator=g))
    out = training.score(y, p, 4)
    assert out["accuracy"] == pytest.approx(metrics.accuracy_score(y, p))
    assert out["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y, p))
    assert out["macro_f1"] == pytest.approx(
        metrics.f1_score(y, p, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    )
    assert out["per_class_recall"] == pytest.approx(
        metrics.recall_score(y, p, labels=[0, 1, 2, 3], average=None, zero_division=0).tolist()
    )
    assert out["confusion"] == metrics.confusion_matrix(y, p, labels=[0, 1, 2, 3]).tolist()


def test_mean_ci_is_the_t_interval() -> None:
    vals = [0.81, 0.84, 0.80]
    out = mean_ci(vals)
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(vals), scale=stats.sem(vals))
    assert out["ci_low"] == pytest.approx(lo) and out["ci_high"] == pytest.approx(hi)
    assert mean_ci([0.5])["ci_low"] is None


def fake_summary(deltas: list[float], other: float = 0.0) -> dict:
    ci = mean_ci(deltas)
    zero = mean_ci([other + 0.001 * i for i in range(len(deltas))])
    return {
        "baseline": "real+classic",
        "classic_policy": "crop",
        "deltas": {
            "real+gan": {"balanced_accuracy": ci, "per_class_recall": {"a": ci, "b": zero}},
            "real+gan+classic": {"balanced_accuracy": zero, "per_class_recall": {"a": zero, "b": zero}},
        },
    }


def test_verdict_says_no_measurable_benefit_when_the_interval_includes_zero() -> None:
    v = verdict(fake_summary([0.02, -0.01, 0.01]))
    assert v["status"] == "no measurable benefit" and "No measurable benefit" in v["text"]
    assert "--trainings" not in v["text"]  # the pointer goes with a claim, not with no evidence
    v = verdict(fake_summary([0.03, 0.04, 0.035]))
    assert v["status"] == "helped" and v["regime"] == "real+gan" and v["classes_helped"] == ["a"]
    assert "+3.5 pts" in v["text"] and "a +3.5" in v["text"]
    assert v["text"].endswith("`augment run CONFIG --trainings 3` tells whether it helped across trainings.")
    v = verdict(fake_summary([-0.03, -0.04, -0.035]))  # real+gan+classic (delta 0) is the best GAN regime
    assert v["status"] == "no measurable benefit" and v["regime"] == "real+gan+classic"
    v = verdict(fake_summary([-0.03, -0.04, -0.035], other=-0.05))  # every GAN regime below the baseline
    assert v["status"] == "hurt" and v["regime"] == "real+gan" and "hurt" in v["text"]
    assert "tells whether it hurt across trainings" in v["text"]
    v = verdict(fake_summary([0.05, 0.05]))  # two equal deltas: a zero-width interval, not evidence
    assert v["status"] == "not enough seeds for an interval"


def test_a_weak_classic_baseline_does_not_flatter_the_gan() -> None:
    # real+gan beats real+classic (+3 pts) but loses to real-only training (-2 pts).
    summary = fake_summary([0.03, 0.031, 0.029])
    summary["deltas"]["real"] = {"balanced_accuracy": mean_ci([0.05, 0.051, 0.049])}
    summary["deltas_vs_real"] = {
        "real+gan": {"balanced_accuracy": mean_ci([-0.02, -0.021, -0.019])},
        "real+gan+classic": {"balanced_accuracy": mean_ci([-0.05, -0.049, -0.048])},
    }
    v = verdict(summary)
    assert v["status"] == "no measurable benefit" and v["regime"] == "real+gan"
    assert "not real-only training" in v["text"] and "real-only vs the classic baseline: +5.0" in v["text"]
    # Beating both: helped, with both deltas in the text.
    summary["deltas_vs_real"]["real+gan"] = {"balanced_accuracy": mean_ci([0.01, 0.011, 0.012])}
    v = verdict(summary)
    assert v["status"] == "helped" and "real-only training by +1.1" in v["text"]


def test_summarize_pairs_seeds_and_aggregates() -> None:
    plan = prepare(make_data(), *synthetic(), ev(regimes=["real+classic", "real+gan"]))
    cells = [run_cell(plan, r, s) for r in plan.regimes for s in plan.seeds]
    out = summarize(plan, cells)
    base, gan = out["regimes"]["real+classic"], out["regimes"]["real+gan"]
    want = [g - b for g, b in zip(gan["balanced_accuracy"]["values"], base["balanced_accuracy"]["values"], strict=True)]
    assert out["deltas"]["real+gan"]["balanced_accuracy"]["values"] == pytest.approx(want)
    assert np.sum(base["confusion"]) == 2 * len(plan.test_labels)
    # Two seeds are too few for a verdict, whatever the interval says.
    assert out["verdict"]["status"] == "not enough seeds for an interval"
    assert "Not enough seeds" in out["verdict"]["text"]
    assert out["steps"] == 6 and out["seeds"] == [0, 1]


@pytest.mark.parametrize("backend", ["torch", "torchvision"])
def test_both_classic_backends_crop_flip_and_replay(backend: str) -> None:
    """The vectorised ops and torchvision's v2 transforms obey the same contract: a crop is a
    window of the -1-padded image, a flip mirrors, and the same generator state replays."""
    x = torch.rand(12, 1, 8, 8) * 2 - 1
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    crop = classic_augment(x, "crop", torch.Generator().manual_seed(3), backend)
    for out, src in zip(crop, padded, strict=True):
        windows = [src[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)]
        assert any(torch.equal(out, w) for w in windows)
    flips = classic_augment(x, "flip", torch.Generator().manual_seed(1), backend)
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(flips, x, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(flips, x, strict=True))  # 12 coin flips, not all heads
    once = classic_augment(x, "crop+flip+affine", torch.Generator().manual_seed(5), backend)
    assert torch.equal(once, classic_augment(x, "crop+flip+affine", torch.Generator().manual_seed(5), backend))
    assert once.min() >= -1.0 - 1e-6 and once.max() <= 1.0 + 1e-6


def test_the_torchvision_backend_runs_the_grid_with_equal_steps() -> None:
    plan = prepare(make_data(), *synthetic(), ev(classic_backend="torchvision"))
    assert plan.classic_backend == "torchvision"
    cells = [run_cell(plan, r, 0) for r in ("real+classic", "real+gan+classic")]
    assert [c["steps"] for c in cells] == [6, 6] and all(c["classic"] == "crop" for c in cells)
    again = run_cell(plan, "real+classic", 0)
    assert again["confusion"] == cells[0]["confusion"]  # reproducible through the global-RNG seeding
    with pytest.raises(ConfigError, match="unknown classic backend"):
        classic_augment(torch.zeros(2, 1, 8, 8), "crop", torch.Generator(), "albumentations")


from conftest import DASK_MALLOC, where_a_24mib_block_lands  # noqa: E402

CELL_HEAP_PROBE = """
import torch
from test_metrics_downstream import ev, make_data, synthetic
from augment.metrics.downstream import prepare, run_cell
run_cell(prepare(make_data(), *synthetic(), ev(steps=2)), "real", 0)
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_cell_keeps_freed_activations_in_the_heap_under_dasks_malloc_setting() -> None:
    """A Dask worker's nanny sets MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold at
    128 KiB: every large activation is then a fresh mmap (page faults each step; a Fashion-MNIST cell
    ran 2.0x slower). A downstream cell undoes that for its process, so a 24 MiB block afterwards
    comes from the heap. Runs in a fresh interpreter with the worker's environment."""
    env = {**DASK_MALLOC, "PYTHONPATH": str(Path(__file__).parent.parent)}
    assert where_a_24mib_block_lands(CELL_HEAP_PROBE, cwd=Path(__file__).parent, env=env) == "[heap]"


def test_the_headline_plot_shows_each_regimes_delta_with_its_interval_and_a_zero_line() -> None:
    from augment.metrics.report import deltas_figure

    summary = fake_summary([0.02, -0.01, 0.01])
    summary.update(regimes={"real+classic": {}, "real+gan": {}, "real+gan+classic": {}}, n_test=400, seeds=[0, 1, 2])
    summary["verdict"] = verdict(summary)
    fig = deltas_figure(summary)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["real+gan", "real+gan+classic"]
    assert "Δ balanced accuracy vs real+classic (pts)" in ax.get_xlabel() and "n=400" in ax.get_xlabel()
    assert ax.get_title().startswith("Does it help? no measurable benefit")
    zero = [line for line in ax.get_lines() if list(line.get_xdata()) == [0.0, 0.0]]
    assert zero, "no zero line"
    # One errorbar per regime, spanning the interval in points.
    bars = [c for c in ax.containers if hasattr(c, "has_xerr") and c.has_xerr]
    assert len(bars) == 2
    ci = summary["deltas"]["real+gan"]["balanced_accuracy"]
    seg = bars[0].lines[2][0].get_segments()[0]
    assert seg[0][0] == pytest.approx(100 * ci["ci_low"]) and seg[1][0] == pytest.approx(100 * ci["ci_high"])


def test_a_class_without_test_images_has_no_recall_in_per_class_csv() -> None:
    from augment.metrics.report import NO_TEST, per_class_rows

    ci = mean_ci([0.1, 0.2, 0.3])
    down = {
        "regimes": {"real+gan": {"per_class_recall": {"a": 0.9, "b": 0.0}}},
        "deltas": {"real+gan": {"per_class_recall": {"a": ci, "b": ci}}},
        "verdict": {"regime": "real+gan"},
    }
    counts = {"train": {"a": 5, "b": 5}, "val": {"a": 1, "b": 1}, "test": {"a": 4, "b": 0}}
    rows = per_class_rows({"class_names": ["a", "b"], "counts": counts, "downstream": down})
    assert rows[0]["recall[real+gan]"] == 0.9 and rows[0]["recall_delta[real+gan]"] == ci["mean"]
    assert rows[1]["recall[real+gan]"] == NO_TEST == "no test images"
    assert rows[1]["recall_delta[real+gan]"] == rows[1]["recall_delta[real+gan]_ci_low"] == NO_TEST
