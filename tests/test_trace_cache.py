"""The shared trace cache: bounded by bytes, one computation per key under concurrency, read-only traces."""

import threading
import time

import pytest
import torch

from vit_core.model import ViT, ViTConfig
from vit_core.trace import TraceCache


class Blob:
    def __init__(self, name: str, nbytes: int):
        self.name, self.nbytes = name, nbytes


def test_least_recently_used_go_first_once_the_bytes_exceed_the_bound():
    cache = TraceCache(max_bytes=250)
    for name in "abc":
        cache.get(name, lambda name=name: Blob(name, 100))
    assert len(cache) == 2 and cache.nbytes == 200  # "a" went: 300 > 250
    cache.get("b", lambda: pytest.fail("b is cached"))  # a hit makes "b" the most recent
    cache.get("d", lambda: Blob("d", 100))
    assert cache.get("b", lambda: Blob("new", 1)).name == "b" and cache.get("c", lambda: Blob("c2", 100)).name == "c2"
    huge = cache.get("huge", lambda: Blob("huge", 10_000))
    assert huge.name == "huge" and len(cache) == 1  # the newest is kept even alone over the bound


def test_a_key_asked_for_by_many_threads_at_once_is_computed_once():
    cache, calls = TraceCache(max_bytes=10**9), []

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return Blob("x", 1)

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", compute))) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(calls) == 1 and len(got) == 12 and all(g is got[0] for g in got)


def test_a_failed_computation_is_not_cached_and_the_next_caller_computes_again():
    cache = TraceCache(max_bytes=10**9)
    with pytest.raises(RuntimeError):
        cache.get("k", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert len(cache) == 0 and cache.get("k", lambda: Blob("ok", 1)).name == "ok"


def test_a_trace_counts_its_bytes_cannot_be_changed_in_place_and_forward_keeps_no_layers():
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2, mlp_dim=32,
                          num_classes=3)).eval()
    x = torch.rand(1, 1, 16, 16)
    tr = model.trace(x)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tr.tensors()}
    assert tr.nbytes == sum(storages.values()) > tr.layers[0].attention.numel() * 4 * 2
    with pytest.raises(RuntimeError, match="[Ii]nference tensor"):
        tr.tokens.add_(1)  # shared by every session: nobody can change it under the others
    assert model._run(x, flat_patches=False, keep=False).layers == []
    torch.testing.assert_close(model(x), tr.logits)
