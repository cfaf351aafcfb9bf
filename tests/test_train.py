"""Training: snapshots describe themselves, resume equals an uninterrupted run, budgets stop it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from augment import checkpoint
from augment.devices import resolve_device
from augment.errors import CheckpointError, ConfigError
from augment.train import train
from augment.train_options import flat_options
from conftest import tiny_config


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path, checkpoint.STATE_FORMAT)["G"]


def test_run_dir_holds_snapshots_grids_config_and_stats(tiny_run: Path) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.yaml", "data.json", "stats.jsonl", "training-state.pt", "network-final.pt"} <= names
    assert {"network-snapshot-000000.pt", "fakes-000000.png"} <= names  # 0.128 kimg snapshots
    snap = checkpoint.load_snapshot(tiny_run / "network-final.pt")
    assert snap.class_names == ["0", "1", "2"]
    assert snap.class_counts == [36, 36, 36]
    assert snap.kimg == pytest.approx(0.256)
    assert snap.config["train"]["kimg"] == 0.256
    assert json.loads((tiny_run / "data.json").read_text())["fingerprint"] == snap.data_fingerprint
    ticks = [json.loads(line) for line in (tiny_run / "stats.jsonl").read_text().splitlines()]
    assert ticks[-1]["kimg"] == pytest.approx(0.256) and all(t["images_per_s"] > 0 for t in ticks)
    G = snap.generator()
    assert not G.training and G(torch.randn(2, 8), torch.tensor([0, 2])).shape == (2, 1, 8, 8)


def test_resume_continues_to_the_same_weights(tmp_path: Path) -> None:
    full_dir, _ = train(tiny_config(tmp_path, "train.kimg=0.384"), out=tmp_path / "full", progress=False)
    part_dir, _ = train(tiny_config(tmp_path, "train.kimg=0.192"), out=tmp_path / "part", progress=False)
    assert checkpoint.load(part_dir / "training-state.pt")["cur_nimg"] == 192
    train(tiny_config(tmp_path, "train.kimg=0.384"), out=part_dir, resume=True, progress=False)
    a, b = _weights(full_dir / "training-state.pt"), _weights(part_dir / "training-state.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ema_a = checkpoint.load_snapshot(full_dir / "network-final.pt").generator_state
    ema_b = checkpoint.load_snapshot(part_dir / "network-final.pt").generator_state
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    a, _ = train(tiny_config(tmp_path, "train.kimg=0.064"), out=tmp_path / "a", progress=False)
    b, _ = train(tiny_config(tmp_path, "train.kimg=0.064"), out=tmp_path / "b", progress=False)
    c, _ = train(tiny_config(tmp_path, "train.kimg=0.064", "seed=1"), out=tmp_path / "c", progress=False)
    wa, wb, wc = (_weights(d / "training-state.pt") for d in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    # train.seed reseeds the training alone: the top-level seed's data, other weights; unset, it is that seed.
    d, _ = train(tiny_config(tmp_path, "train.kimg=0.064", "train.seed=0"), out=tmp_path / "d", progress=False)
    e, _ = train(tiny_config(tmp_path, "train.kimg=0.064", "train.seed=1"), out=tmp_path / "e", progress=False)
    wd, we = _weights(d / "training-state.pt"), _weights(e / "training-state.pt")
    assert all(torch.equal(wa[k], wd[k]) for k in wa)
    assert not any(torch.equal(wa[k], we[k]) for k in wa if wa[k].is_floating_point() and wa[k].numel() > 1)
    data = {r: json.loads((r / "data.json").read_text()) for r in (a, c, e)}
    assert data[e] == data[a] and data[c] != data[a]


def test_resume_refuses_other_data(tmp_path: Path, tiny_run: Path) -> None:
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "copy")
    with pytest.raises(CheckpointError, match="trained on data"):
        train(tiny_config(tmp_path, "data.per_class=30"), out=run, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(tmp_path), out=tmp_path / "empty", resume=True, progress=False)


def test_time_budget_stops_training(tmp_path: Path) -> None:
    run, snap = train(
        tiny_config(tmp_path, "train.kimg=1000", "train.max_minutes=0.02"), out=tmp_path / "r", progress=False
    )
    kimg = checkpoint.load_snapshot(snap).kimg
    assert 0 < kimg < 1000


def test_failed_save_leaves_no_partial_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "network.pt"

    def broken_write(self: Path, data: bytes) -> int:  # the disk fails halfway through the file
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"format": "x", "w": torch.ones(64)}, target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_loading_refuses_pickled_objects(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": checkpoint.SNAPSHOT_FORMAT, "payload": Evil()}, fh)
    torch.save({"format": checkpoint.SNAPSHOT_FORMAT, "obj": Path("x")}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_snapshot(path)  # a plain pickle is not even parsed
    with pytest.raises(CheckpointError, match="refused to load.*pathlib"):
        checkpoint.load_snapshot(tmp_path / "obj.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_snapshot(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a gan-augment/snapshot"):
        checkpoint.load_snapshot(tmp_path / "other.pt")


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def _cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc")
def test_precision_auto_is_bf16_exactly_where_the_cpu_computes_it(tmp_path: Path) -> None:
    """``precision: auto`` picks bf16 on a CPU with AMX tiles or AVX512-BF16 (read here from the
    kernel's CPU flags, not from torch) and fp32 elsewhere; explicit values pass through."""
    from augment.devices import resolve_precision
    from augment.train import loop_kwargs

    cpu = torch.device("cpu")
    native = bool(_cpuinfo_flags() & {"amx_tile", "avx512_bf16"})
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(ConfigError, match="train.precision must be auto, fp32 or bf16, got 'fp16'"):
        resolve_precision("fp16", cpu)
    kwargs = loop_kwargs(tiny_config(tmp_path, "train.precision=auto"), "cpu")
    assert kwargs["performance"].precision == ("bf16" if native else "fp32")


def test_bf16_training_is_reproducible_and_differs_from_fp32(tmp_path: Path) -> None:
    """bf16 autocast on the CPU: the same seed gives the same weights; it is not silently fp32."""
    sets = ("train.kimg=0.064", "train.channels_last=true")
    a, _ = train(tiny_config(tmp_path, *sets, "train.precision=bf16"), out=tmp_path / "a", progress=False)
    b, _ = train(tiny_config(tmp_path, *sets, "train.precision=bf16"), out=tmp_path / "b", progress=False)
    c, _ = train(tiny_config(tmp_path, *sets, "train.precision=fp32"), out=tmp_path / "c", progress=False)
    wa, wb, wc = (_weights(d / "training-state.pt") for d in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert {w.dtype for w in wa.values() if w.is_floating_point()} == {torch.float32}  # weights stay fp32
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    for k in wa:  # two steps apart only by bf16 rounding
        torch.testing.assert_close(wa[k], wc[k], rtol=0.05, atol=0.02, msg=k)


from conftest import where_a_24mib_block_lands  # noqa: E402

HEAP_PROBE = """
import sys, torch
from augment.devices import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_cpu_training_keeps_freed_activations_in_the_heap(tmp_path: Path) -> None:
    """keep_freed_memory raises glibc's mmap threshold: a 24 MiB activation comes from the heap
    (reused step after step) instead of fresh mmap pages (page faults every step). Each case runs in
    a fresh interpreter because the setting is process-wide."""
    assert where_a_24mib_block_lands(HEAP_PROBE, "default") == "anonymous"
    assert where_a_24mib_block_lands(HEAP_PROBE, "keep") == "[heap]"


def test_cuda_section_replaces_cpu_settings_only_on_cuda(tmp_path: Path) -> None:
    from augment.train import loop_kwargs

    cfg = tiny_config(tmp_path, "train.cuda.batch_size=256", "train.cuda.lr_d=1e-3", "train.cuda.r1_interval=8")
    cpu, gpu = flat_options(loop_kwargs(cfg, "cpu")), flat_options(loop_kwargs(cfg, "cuda"))  # no GPU needed
    assert (cpu["batch_size"], cpu["lr_d"], cpu["compile"], cpu["r1_interval"], cpu["precision"]) == (
        32,
        2e-4,
        False,
        cfg.train.r1_interval,  # the config's own (digits: lazy R1, 16)
        "fp32",
    )
    assert (gpu["batch_size"], gpu["lr_d"], gpu["lr_g"], gpu["compile"], gpu["r1_interval"], gpu["precision"]) == (
        256,
        1e-3,
        2e-4,
        True,
        8,
        "bf16",
    )
    assert gpu["channels_last"] is True and cpu["channels_last"] is False
    modes = tiny_config(tmp_path, "train.compile=true", "train.cuda.compile_mode=reduce-overhead")
    assert loop_kwargs(modes, "cpu")["performance"].compile_mode == "default"
    assert loop_kwargs(modes, "cuda")["performance"].compile_mode == "reduce-overhead"


def test_lazy_r1_is_resumed_on_the_same_steps(tmp_path: Path) -> None:
    """Lazy R1 counts D steps from the images shown, so a resumed run applies it on the same steps."""
    sets = ("train.r1_interval=3",)
    full_dir, _ = train(tiny_config(tmp_path, "train.kimg=0.256", *sets), out=tmp_path / "full", progress=False)
    part_dir, _ = train(tiny_config(tmp_path, "train.kimg=0.128", *sets), out=tmp_path / "part", progress=False)
    train(tiny_config(tmp_path, "train.kimg=0.256", *sets), out=part_dir, resume=True, progress=False)
    a, b = _weights(full_dir / "training-state.pt"), _weights(part_dir / "training-state.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    eager, _ = train(tiny_config(tmp_path, "train.kimg=0.256"), out=tmp_path / "every", progress=False)
    c = _weights(eager / "training-state.pt")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the interval does change training


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tmp_path: Path) -> None:
    """torch.compile (inductor on the CPU here) trains the same model: after 2 steps the weights
    agree with the eager loop to float rounding (the R1 pass runs eagerly in both)."""
    sets = ("train.kimg=0.064", "train.r1_interval=2")
    eager, _ = train(tiny_config(tmp_path, *sets), out=tmp_path / "eager", progress=False)
    compiled, _ = train(tiny_config(tmp_path, *sets, "train.compile=true"), out=tmp_path / "compiled", progress=False)
    a, b = _weights(eager / "training-state.pt"), _weights(compiled / "training-state.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)


def test_resnet_generator_trains_and_its_snapshot_rebuilds_it(tmp_path: Path, tiny_run: Path) -> None:
    run, _ = train(tiny_config(tmp_path, "model.g_arch=resnet"), out=tmp_path / "resnet", progress=False)
    snap = checkpoint.load_snapshot(run / "network-final.pt")
    assert snap.generator_kwargs["residual"] is True
    G = snap.generator()
    assert G.residual
    x = G(torch.randn(3, 8), torch.tensor([0, 1, 2]))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    # Snapshots written before the switch have no `residual` key: they rebuild the DCGAN generator.
    old = checkpoint.load_snapshot(tiny_run / "network-final.pt")
    assert old.generator_kwargs["residual"] is False
    old.generator_kwargs.pop("residual")
    assert not old.generator().residual
    with pytest.raises(ConfigError, match="g_arch"):
        tiny_config(tmp_path, "model.g_arch=stylegan")
