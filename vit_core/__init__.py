"""ViT Explorer's engine: a traceable ViT, checkpoint readers, safe images, pure analyses.

Never imports streamlit; usable from a script or a notebook.
"""

from vit_core.model import ViT, ViTConfig, ViTTrace

__all__ = ["ViT", "ViTConfig", "ViTTrace"]
