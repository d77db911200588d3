"""Experiment · The cut and the reach: patch size and stride (overlapping patches), then Swin-style windows
laid on the model's own attention."""

import streamlit as st

import ui
from vit_core import experiments as ex
from vit_core.viz import experiments as vz

t = ui.t
lv = ui.page("exp.windows", vit_only=True)
tr = lv.trace
s = tr.shapes
names = lv.class_names()


@st.cache_data(show_spinner=False, max_entries=32)
def windowed(model_id: str, digest: str, window: int, shift: bool, _pixels):
    return ex.windowed_probs(ui.load_model(model_id)[0], _pixels, window, shift)[0]


# --- 1. the cut: patch size P and stride S
st.subheader(t("exp.windows.stride.title"))
st.markdown(t("exp.windows.stride.body"))
c = st.columns(2)
P = c[0].slider(t("exp.windows.patch"), 2, min(s.H, s.W) // 2, key=ui.setting(f"exp.windows.P.{s.H}x{s.W}", s.P))
S = c[1].slider(t("exp.windows.stride"), 1, P, key=ui.setting(f"exp.windows.S.{s.H}x{s.W}", max(1, P // 2),
                                                                 valid=lambda v: 1 <= v <= P))
geo = ex.stride_geometry((s.H, s.W), P, S, s.C, s.prefix)
own = ex.stride_geometry((s.H, s.W), s.P, s.P, s.C, s.prefix)
left, right = st.columns([3, 2])
with left:
    around = (geo.grid[0] // 2, geo.grid[1] // 2)
    ui.plot(vz.stride_figure(lv.display, P, S, geo.grid, around, title=t("exp.windows.fig.stride", P=P, S=S)),
            key="exp.windows.stride_fig")
with right:
    st.latex(rf"N = \Big(\Big\lfloor\frac{{{s.H}-{P}}}{{{S}}}\Big\rfloor+1\Big)\Big(\Big\lfloor\frac{{{s.W}-{P}}}{{{S}}}"
             rf"\Big\rfloor+1\Big)")
    st.latex(rf"= {geo.grid[0]}\times{geo.grid[1]} = {geo.num_patches}")
    for label, value, was in [("n", geo.num_patches, own.num_patches), ("dim", geo.patch_dim, own.patch_dim),
                              ("t2", geo.attention_entries, own.attention_entries)]:
        st.metric(t(f"exp.windows.metric.{label}"), f"{value:,}", t("exp.windows.vs_model", v=f"{was:,}",
                  x=f"{value / was:.2f}"), delta_color="off", delta_arrow="off")
st.caption(t("exp.windows.stride.caption", overlap=geo.overlap, used_h=geo.used[0], used_w=geo.used[1], H=s.H, W=s.W))

# --- 2. the reach: windows laid on the model's own attention
st.subheader(t("exp.windows.window.title"))
st.markdown(t("exp.windows.window.body"))
c = st.columns(2)
window = c[0].slider(t("exp.windows.size"), 1, max(s.h, s.w), key=ui.setting(
    f"exp.windows.size.{s.h}x{s.w}", max(2, min(s.h, s.w) // 2)))
shift = c[1].toggle(t("exp.windows.shift"), key=ui.setting("exp.windows.shift", False), help=t("exp.windows.shift_help"))
layer, head = ui.layer_head_picker(s.L, s.heads, key="exp.windows")
r, col = ui.patch_picker(tr)
stats = ex.window_stats(tr.attentions, tr.grid, window, shift, s.prefix)
attention, lost = ex.query_window(tr.attentions, tr.grid, window, shift, layer, head, (r, col), s.prefix)
left, right = st.columns([3, 2])
with left:
    fig = vz.window_figure(lv.display, attention.numpy(), s.P, window, ex.window_offset(window, shift), (r, col),
                           colorbar_title=t("exp.windows.attention"), hover=t("exp.windows.hover"),
                           title=t("exp.windows.fig.window", r=r, c=col, l=layer + 1, h=head + 1))
    ui.clickable_chart(fig, key="exp.windows.window_fig", grid=tr.grid)
with right:
    st.metric(t("exp.windows.metric.lost"), f"{lost:.1%}")
    st.metric(t("exp.windows.metric.windows"), f"{stats.windows}")
    st.metric(t("exp.windows.metric.pairs"), f"{stats.allowed_pairs:,}", t("exp.windows.of_pairs",
              total=f"{stats.total_pairs:,}", ratio=f"{stats.cost_ratio:.1%}"), delta_color="off", delta_arrow="off")
ui.plot(vz.layer_lines({t("exp.windows.series.outside"): stats.outside.mean(1).numpy(),
                        t("exp.windows.series.head", h=head + 1): stats.outside[:, head].numpy(),
                        t("exp.windows.series.prefix"): stats.prefix.mean(1).numpy()},
                       x_title=t("exp.windows.layer"), y_title=t("exp.windows.share"),
                       title=t("exp.windows.fig.layers", w=window)), key="exp.windows.layers")
st.caption(t("exp.windows.layers.caption"))

# --- what-if: the same weights, attention kept inside the windows
probs = windowed(lv.model_id, lv.digest, window, shift, tr.pixels)
own_cls, new_cls = int(tr.probs[0].argmax()), int(probs.argmax())
m = st.columns(2)
m[0].metric(t("exp.windows.whatif.own"), names[own_cls], f"{float(tr.probs[0, own_cls]):.1%}", delta_color="off",
            delta_arrow="off")
m[1].metric(t("exp.windows.whatif.windowed"), names[new_cls], f"{float(probs[new_cls]):.1%}", delta_color="off",
            delta_arrow="off")
st.info(t("exp.windows.whatif.caption"))
