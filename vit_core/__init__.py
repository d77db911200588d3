"""ViT Explorer's engine: a traceable ViT, checkpoint readers, safe images, pure analyses, figures.

Never imports streamlit; usable from a script or a notebook:

    from vit_core import load_model
    model, card = load_model()                 # the embedded Fashion-MNIST ViT
    trace = model.trace(card.preprocess(pil_image))
"""

from vit_core.model import ViT, ViTConfig, ViTTrace
from vit_core.zoo import load_model

__all__ = ["ViT", "ViTConfig", "ViTTrace", "load_model"]
