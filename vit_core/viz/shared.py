"""The figure builders of vit_core.viz, with their results shared between callers.

    from vit_core.viz.shared import encoder as vz     # instead of: from vit_core.viz import encoder as vz

A class looks at the same picture: thirty sessions on one page build the same figures from the same
numbers, and building a plotly figure (its validation) is most of a page's rerun. Here a call with
inputs equal to an earlier one's (arrays and tensors compared by content) returns that call's figure
object itself, from a bounded least-recently-used table shared by every session of the process.
When thirty sessions ask for the same new figure at once (the teacher says "now step 5"),
one builds it and the others wait for that one instead of building it thirty times.
The objects are shared, so callers must treat them as read-only (pass options to the builder rather
than updating its figure). Inputs that cannot be compared by content (a PIL image, a callable) are
built every time, as without this module.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch

from vit_core.viz import common as _common, encoder as _encoder, experiments as _experiments, reach as _reach
from vit_core.viz import rollout as _rollout, steps as _steps

ENTRIES = 512  # figures kept; a page draws up to about ten per view
_lock = threading.Lock()
_table: OrderedDict = OrderedDict()
_building: dict = {}  # key -> Event set when the one session building that figure is done


class Unshareable(TypeError):
    """An input this module cannot compare by content."""


def fingerprint(x):
    """A hashable stand-in for an input that is equal exactly when the inputs are (arrays: shape, dtype, bytes)."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bfloat16 or x.requires_grad:
            raise Unshareable(type(x).__name__)
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        data = np.ascontiguousarray(x)
        return ("array", data.shape, data.dtype.str, hashlib.blake2b(data.tobytes(), digest_size=16).digest())
    if isinstance(x, (str, bytes, bool, int, float, type(None))):
        return (type(x).__name__, x)
    if isinstance(x, np.generic):
        return ("scalar", x.dtype.str, x.item())
    if isinstance(x, range):
        return ("range", x.start, x.stop, x.step)
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(fingerprint(v) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple((fingerprint(k), fingerprint(v)) for k, v in x.items()))
    raise Unshareable(type(x).__name__)


class SharedModule:
    """A viz module whose functions return a shared result for inputs equal to an earlier call's."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if not callable(value) or isinstance(value, type):
            return value
        module = self._module.__name__

        def call(*args, **kwargs):
            try:
                key = (module, name, fingerprint(args), fingerprint(dict(sorted(kwargs.items()))))
            except Unshareable:
                return value(*args, **kwargs)
            while True:
                with _lock:
                    if key in _table:
                        _table.move_to_end(key)
                        return _table[key]
                    built = _building.get(key)
                    mine = built is None
                    if mine:
                        built = _building[key] = threading.Event()
                if mine:
                    break
                built.wait()  # another session is building this figure: take its result (or, if it failed, retry)
            try:
                result = value(*args, **kwargs)  # outside the lock: other figures are built meanwhile
                with _lock:
                    _table[key] = result
                    while len(_table) > ENTRIES:
                        _table.popitem(last=False)
                return result
            finally:
                with _lock:
                    del _building[key]
                built.set()

        call.__name__ = name
        return call


common, encoder, experiments, reach, rollout, steps = (SharedModule(m) for m in (
    _common, _encoder, _experiments, _reach, _rollout, _steps))

__all__ = ["ENTRIES", "SharedModule", "Unshareable", "common", "encoder", "experiments", "fingerprint", "reach",
           "rollout", "steps"]
