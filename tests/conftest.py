"""Shared fixtures: tiny configs and one tiny trained run reused across test modules."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Offline, quiet, isolated: set before Prefect/MLflow/albumentations are imported anywhere.
_HOME = tempfile.mkdtemp(prefix="augment-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)  # the session's Prefect home goes with it
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

from augment.tracking_env import apply_mlflow_defaults  # noqa: E402

apply_mlflow_defaults()  # what the command line sets before mlflow is imported
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from augment.config import Config, load_config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = [
    "data.source=digits",
    "data.image_size=8",
    "data.classes=['0','1','2']",
    "data.imbalance=null",
    "data.per_class=40",
    "data.split.test_per_class=20",
    "model.z_dim=8",
    "model.g_channels=8",
    "model.d_channels=8",
    "train.kimg=0.256",
    "train.batch_size=32",
    "train.snapshot_kimg=0.128",
    "train.device=cpu",
    "evaluate.seeds=2",
    "evaluate.steps=20",
    "evaluate.samples_per_class=20",
    "generate.batch_size=16",
]


def tiny_config(tmp_path: Path, *overrides: str) -> Config:
    """A config that trains in about a second: 3 digit classes, 8x8, 8-channel networks."""
    return load_config(
        REPO / "configs" / "digits.yaml",
        [*TINY, f"output.root={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}", *overrides],
    )


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    return tiny_config(tmp_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny run directory (read-only for tests: copy it before changing it)."""
    from augment.train import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config(tmp)
    run_dir, _ = train(cfg, out=tmp / "run", progress=False)
    return run_dir


# A pipeline in about half a minute: a small extractor, a small pool, 2 regimes x 3 seeds of 10 steps
# (3 seeds: the fewest that make a verdict, which the promotion gate requires).
PIPELINE_FAST = [
    "evaluate.seeds=3",
    "evaluate.extractor_steps=30",
    "evaluate.synthetic_per_class=20",
    "evaluate.classic=['crop']",
    "evaluate.regimes=['real+classic','real+gan']",
    "evaluate.steps=10",
    "evaluate.batch_size=32",
    "tracking.experiment=flows-tests",
]


def copy_run(src: Path, dest: Path, *overrides: str) -> Path:
    """A copy of run directory ``src`` at ``dest`` whose stored config has ``overrides`` applied."""
    import json

    from augment import rundir

    shutil.copytree(src, dest)
    cfg = load_config(dest / rundir.CONFIG, list(overrides))
    (dest / rundir.CONFIG).write_text(json.dumps(cfg.to_dict()))  # YAML is a superset of JSON
    return dest


def write_pipeline_config(tmp: Path, *overrides: str) -> tuple[Path, Config]:
    """The tiny pipeline config (:data:`PIPELINE_FAST`) saved as ``tmp/tiny.yaml``."""
    from augment.config import save_config

    cfg = tiny_config(tmp, *PIPELINE_FAST, *overrides)
    path = tmp / "tiny.yaml"
    save_config(cfg, path)
    return path, cfg


def augment_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real console command, reporting to the session's test Prefect API."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> dict:
    """`augment run` on the tiny pipeline config once per session, through the console command
    (the flow tests and the UI test read its store; later tests may add runs to it)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    path, cfg = write_pipeline_config(tmp)
    result = augment_command("run", str(path), "--quiet", cwd=tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"tmp": tmp, "path": path, "cfg": cfg, "output": result.stdout}


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test of the session (starts in ~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


#: The environment a Dask nanny gives its workers: glibc's mmap threshold pinned at 128 KiB.
DASK_MALLOC = {"MALLOC_TRIM_THRESHOLD_": "65536"}


def where_a_24mib_block_lands(script: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    """Run ``script`` (with ``args``) in a fresh interpreter (malloc settings are process-wide),
    then allocate 24 MiB there and return the /proc/self/maps mapping it landed in: "[heap]"
    (reused by malloc) or "anonymous" (a fresh mmap, unmapped when freed)."""
    out = subprocess.run(
        [sys.executable, "-c", script + WHERE_IS_A_24MIB_BLOCK, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


WHERE_IS_A_24MIB_BLOCK = """
block = torch.empty(24 << 20, dtype=torch.uint8)
ptr = block.data_ptr()
for line in open("/proc/self/maps"):
    fields = line.split()
    lo, hi = (int(v, 16) for v in fields[0].split("-"))
    if lo <= ptr < hi:
        print(fields[5] if len(fields) > 5 else "anonymous")
"""


@pytest.fixture(scope="session")
def random_fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised FID InceptionV3 saved in torch-fidelity's weights format (a plain state
    dict, the real file's keys and shapes), so the loading and feature code runs for real offline.

    torch-fidelity builds the network and then loads weights in one constructor; the constructor's
    load is skipped here only to read the random initial state out. Convolutions get He-normal
    weights so activations keep their scale through ~100 layers (features of order 1, not 1e-10)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, t in net.state_dict().items():
        if name.endswith("conv.weight"):
            fan_in = t[0].numel()
            t = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
        state[name] = t.float().clone()
    path = tmp_path_factory.mktemp("fid") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path
