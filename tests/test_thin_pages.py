"""Pages stay thin (DESIGN: read state, call vit_core, render): no tensor or array library, no model or
config attributes, and a size a newcomer reads in one sitting (steps about 80 lines, labs about 120)."""

import ast
from pathlib import Path

import pytest

PAGES = Path(__file__).resolve().parent.parent / "pages"
LABS = {"rollout_lab", "cnn_vs_vit", "classroom", "exp_position", "exp_logit_lens", "exp_finetune"}
MAX_LINES = {"step": 80, "lab": 120}
LIBRARIES = {"torch", "numpy", "pandas", "PIL", "plotly", "matplotlib"}
MODEL_PARTS = {"model", "config", "blocks", "head", "patch_embed", "cls_token", "pos_embed_param", "device"}


def pages():
    return sorted(PAGES.glob("*.py"))


@pytest.mark.parametrize("path", pages(), ids=lambda p: p.stem)
def test_a_page_is_short(path):
    kind = "lab" if path.stem in LABS else "step"
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES[kind], f"{path.name}: {lines} lines, a {kind} page keeps to {MAX_LINES[kind]}"


@pytest.mark.parametrize("path", pages(), ids=lambda p: p.stem)
def test_a_page_imports_no_tensor_or_plotting_library(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & LIBRARIES, f"{path.name} imports {sorted(imported & LIBRARIES)}: that work is vit_core's"


@pytest.mark.parametrize("path", pages(), ids=lambda p: p.stem)
def test_a_page_reads_no_model_attribute(path):
    """`lv.model` may be handed to vit_core; reading into it (`lv.model.x`, `card.config.x`) is model work."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reads = [f"{node.value.attr}.{node.attr}" for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
             and node.value.attr in MODEL_PARTS]
    assert not reads, f"{path.name} reads {reads}: ask vit_core (trace.shapes, the card) instead"
