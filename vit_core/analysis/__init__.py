"""Analyses of a ViT's tensors: where it looks, how far it reaches, and whether the map is faithful.

Every function takes tensors (or, where it must differentiate, a callable) and returns tensors:
no hooks, no streamlit, nothing on a model changes. The patch grid (h, w) is always passed in,
never guessed from sqrt(N), so non-square grids work. Token order is the model's:
[prefix tokens (CLS, DeiT's distillation token); h·w patches, row-major].

Shapes: B batch, L layers, H heads, T = prefix + N tokens, N = h·w patches.
"""


from vit_core.analysis.reach import *  # noqa: F401,F403
from vit_core.analysis.readouts import *  # noqa: F401,F403
from vit_core.analysis.rollout import *  # noqa: F401,F403
from vit_core.claims import compare_data_efficiency  # noqa: F401 - the comparison lives with the claims it reads
