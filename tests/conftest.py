import os
import sys
from pathlib import Path

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
