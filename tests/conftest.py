import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def _serve_like_a_running_server():
    """AppTest re-detects Streamlit's old `pages/`-folder mode before every run, so every AppTest run
    would start a page without app.py (see ui._through_app) and lose that run's button clicks. A real
    server leaves that mode for good at its first st.navigation call; tests start from that state."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = __init__


_serve_like_a_running_server()


# ----------------------------------------------------------------------------- models for the page tests

@pytest.fixture(scope="session")
def fmnist_model(tmp_path_factory) -> str | None:
    """The model to select for the embedded Fashion-MNIST ViT: None (the app's default) once its weights
    exist; until then a random ViT with its config and card, wide weights so its attention is not flat."""
    from vit_core import zoo

    if zoo.embedded_path(zoo.DEFAULT_MODEL).is_file():
        return None
    from apptest import save_vit
    from vit_core.card import Preprocess
    from vit_core.data import CLASSES, CLASSES_ZH
    from vit_core.train import VIT_DEFAULT

    preprocess = Preprocess(size=VIT_DEFAULT.image_size, resize="fit_pad", crop_pct=1.0, interpolation="bilinear",
                            mean=(0.286,), std=(0.353,), channels="L", invert="auto")  # as vit_core.train writes it
    return save_vit(tmp_path_factory.mktemp("models"), "fmnist-like", VIT_DEFAULT, list(CLASSES), std=0.15,
                    class_names_zh=list(CLASSES_ZH), preprocess=preprocess)


@pytest.fixture(scope="session")
def deit_model(tmp_path_factory) -> str:
    """An ImageNet-like DeiT: RGB, P = 16, a distillation token (two prefix tokens), a non-square 4×6 grid,
    1000 ImageNet classes."""
    from apptest import save_vit
    from vit_core.model import ViTConfig
    from vit_core.weights import imagenet_classes

    cfg = ViTConfig.variant("Ti/16", image_size=(64, 96), depth=2, distilled=True)
    return save_vit(tmp_path_factory.mktemp("models"), "deit-like", cfg, list(imagenet_classes()), seed=1,
                    title="DeiT-like")


# ----------------------------------------------------------------------------- a real Redis for the classroom tests

@pytest.fixture(scope="session")
def redis_url():
    """REDIS_URL if the run provides one (CI's .ci/run starts redis-server), else a redis-server of our own
    on a free port of 6390-6399, with no persistence, stopped after the session. No redis-server: fail."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from classroom import RedisServer

    try:
        server = RedisServer()
    except (SystemExit, RuntimeError) as err:  # not installed, no free port, no answer
        pytest.fail(f"{err}; or set REDIS_URL to a running one")
    yield server.url
    server.stop()
