"""vit_core.viz.shared: a figure built once per distinct input, shared by every caller."""

import numpy as np
import torch

from vit_core.viz import shared
from vit_core.viz.common import bars


def test_equal_inputs_share_one_figure_and_different_ones_do_not():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    first = shared.common.heatmap(a, colorbar_title="x")
    assert shared.common.heatmap(a.copy(), colorbar_title="x") is first  # equal content, another array
    b = a.copy()
    b[0, 0] = -1
    assert shared.common.heatmap(b, colorbar_title="x") is not first
    assert shared.common.heatmap(a, colorbar_title="y") is not first  # any argument counts
    assert shared.common.heatmap(a.astype(np.float64), colorbar_title="x") is not first  # so does the dtype
    np.testing.assert_array_equal(np.asarray(first.data[0].z, dtype=np.float32), a)


def test_fingerprints_see_content_shape_and_dtype():
    f = shared.fingerprint
    assert f([np.zeros(4), {"k": 1}]) == f([np.zeros(4), {"k": 1}])
    assert f(np.zeros(4)) != f(np.zeros((2, 2))) and f(np.zeros(4)) != f(np.zeros(4, dtype=np.float32))
    assert f(torch.ones(3)) == f(np.ones(3, dtype=np.float32))
    assert f(range(1, 5)) != f(range(1, 6)) and f(1) != f(1.0) and f(True) != f(1)


def test_inputs_it_cannot_compare_are_built_every_time():
    class Opaque:
        pass

    calls = []
    module = type("M", (), {"__name__": "m", "build": staticmethod(lambda x: calls.append(x) or object())})
    mod = shared.SharedModule(module)
    o = Opaque()
    assert mod.build(o) is not mod.build(o) and len(calls) == 2
    assert mod.build(3) is mod.build(3) and len(calls) == 3


def test_the_table_is_bounded(monkeypatch):
    monkeypatch.setattr(shared, "ENTRIES", 3)
    figs = [shared.common.bars(["a"], [float(i)]) for i in range(5)]
    assert len(shared._table) <= 3
    assert shared.common.bars(["a"], [4.0]) is figs[4]  # the most recent stay
    assert shared.common.bars(["a"], [0.0]) is not figs[0]  # the oldest went
    assert shared.common.bars is not bars and shared.common.PALETTE is shared._common.PALETTE


def test_sessions_asking_for_the_same_new_figure_at_once_build_it_once():
    import threading
    import time

    calls, started = [], threading.Event()

    def slow(x):  # a figure build long enough that every other session asks while it runs
        calls.append(x)
        started.set()
        time.sleep(0.3)
        return object()

    mod = shared.SharedModule(type("M", (), {"__name__": "slow_m", "build": staticmethod(slow)}))
    got = [None] * 8
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, mod.build(7))) for i in range(8)]
    threads[0].start()
    started.wait(5)
    for th in threads[1:]:
        th.start()
    for th in threads:
        th.join(10)
    assert calls == [7] and all(g is got[0] for g in got)  # one build, one shared result
    assert not shared._building  # nothing left marked as in progress


def test_a_failed_build_lets_the_waiting_sessions_build_it_themselves():
    import threading
    import time

    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            time.sleep(0.2)
            raise MemoryError("the first build fails")
        return object()

    mod = shared.SharedModule(type("M", (), {"__name__": "flaky_m", "build": staticmethod(flaky)}))
    errors, got = [], []

    def ask():
        try:
            got.append(mod.build(1))
        except MemoryError as err:
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for th in threads:
        th.start()
        time.sleep(0.02)
    for th in threads:
        th.join(10)
    assert len(errors) == 1 and len(got) == 3 and len(calls) == 2  # the failure is its caller's; one rebuild
    assert all(g is got[0] for g in got) and not shared._building


def test_the_compute_axis_labels_every_tick_with_its_whole_value():
    """A log axis with plotly's minor labels writes 50 as "5" between 10 and 100; ours are written out and span
    the data: every run inside the ticks, 1-2-5 steps, no tick more than a step beyond the data."""
    from vit_core.viz.reach import compute_by_size
    cpu_s = {"ViT": [(240.0, 300.0), (6000.0, 6600.0)], "CNN": [(180.0,), (2400.0,)]}  # 3 to 110 minutes
    y = compute_by_size([1000, 20000], cpu_s, title="", x_title="", y_title="", hover="").layout.yaxis
    assert list(y.tickvals) == [2, 5, 10, 20, 50, 100, 200] and list(y.ticktext) == [
        "2", "5", "10", "20", "50", "100", "200"]
