"""Step 1 · Patchify: the image as the model sees it, cut into a grid of P×P patches (ViT §3.1)."""

import streamlit as st

import ui
from vit_core import analysis, claims, experiments as ex
from vit_core.viz.shared import common as viz, experiments as vx, steps as vz

t = ui.t
lv = ui.page("step1")
tr = lv.trace
s = tr.shapes
P, C = s.P, s.C
geo = analysis.patch_geometry((s.H, s.W), P, C, s.prefix)
b16 = analysis.patch_geometry((224, 224), 16, 3)

st.latex(rf"N = \frac{{H \cdot W}}{{P^2}} = \frac{{{s.H} \cdot {s.W}}}{{{P}^2}} = {s.h} \times {s.w} = {s.N}"
         rf"\qquad x_p \in \mathbb{{R}}^{{N \times (P^2 \cdot C)}} = \mathbb{{R}}^{{{s.N} \times {geo.patch_dim}}}")
st.markdown(t("step1.live", **s._asdict(), PPC=geo.patch_dim))
st.caption(t("step1.b16", N=b16.num_patches, PPC=b16.patch_dim))


@ui.section
def the_patch():  # the grid, one patch and its numbers: a click or a typed row / column reruns this alone
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader(t("step1.grid.title"))
        r, c = ui.patch_picker(tr)
        ui.clickable_chart(viz.image_grid(lv.display, tr.grid, P, selected=(r, c), hover=t("step1.grid.hover"),
                                          height=560), key="step1.grid", grid=tr.grid)
    with right:
        st.subheader(t("step1.patch.title", r=r, c=c, P=P))
        ui.plot(viz.image_grid(lv.display[r * P:(r + 1) * P, c * P:(c + 1) * P], height=220), key="step1.crop")
        values = tr.pixels[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P]  # (C, P, P): what the model receives
        pre = lv.card.preprocess
        lo = min((0 - m) / sd for m, sd in zip(pre.mean, pre.std))  # the range any normalised pixel can take,
        hi = max((1 - m) / sd for m, sd in zip(pre.mean, pre.std))  # so every patch is drawn on one fixed scale
        names = [t(f"step1.channel.{C}.{i}") for i in range(C)] if C in (1, 3) else [str(i) for i in range(C)]
        ui.plot(vz.patch_pixels(values.numpy(), channel_titles=names, colorbar_title=t("step1.patch.colorbar"),
                                zmin=lo, zmax=hi, hover=t("step1.patch.hover")), key="step1.pixels")
        st.caption(t("step1.patch.caption", mean=", ".join(f"{m:g}" for m in pre.mean),
                     std=", ".join(f"{sd:g}" for sd in pre.std)))
        ui.show_tensor(t("step1.tensor.patch", r=r, c=c), values)
    ui.show_tensor(t("step1.tensor.pixels"), tr.pixels[0])


the_patch()


@ui.section
def what_if():  # another patch size, or a stride that makes the patches overlap: the cut and what it costs
    st.subheader(t("step1.whatif.title"))
    st.markdown(t("step1.whatif.intro"))
    options = analysis.patch_size_options((s.H, s.W), P)
    labels = {p: t("step1.whatif.option", P=p) if p == P else str(p) for p in options}
    c = st.columns(2)
    Q = ui.choice(c[0].select_slider, t("step1.whatif.label"), options, labels, key="vx.step1.whatif", default=P)
    S = c[1].slider(t("step1.stride.label"), 1, Q, key=ui.setting(f"vx.step1.stride.{Q}", Q), help=t("step1.stride.help"))
    alt = ex.stride_geometry((s.H, s.W), Q, S, C, s.prefix)  # S = Q: ViT's cut, as analysis.patch_geometry
    grid_col, numbers = st.columns([3, 2], gap="large")
    with grid_col:
        around = (alt.grid[0] // 2, alt.grid[1] // 2)
        ui.plot(viz.image_grid(lv.display, alt.grid, Q, height=480) if S == Q else vx.stride_figure(
            lv.display, Q, S, alt.grid, around, title=t("step1.stride.fig", P=Q, S=S), height=480), key="step1.whatif.grid")
    with numbers:
        st.latex(rf"N = \Big(\Big\lfloor\tfrac{{{s.H}-{Q}}}{{{S}}}\Big\rfloor+1\Big)\Big(\Big\lfloor\tfrac{{{s.W}-{Q}}}"
                 rf"{{{S}}}\Big\rfloor+1\Big) = {alt.num_patches}")
        for label, now, base in [("n", alt.num_patches, geo.num_patches), ("ppc", alt.patch_dim, geo.patch_dim),
                                 ("t", alt.tokens, geo.tokens), ("att", alt.attention_entries, geo.attention_entries)]:
            st.metric(t(f"step1.whatif.{label}"), f"{now:,}", t("step1.whatif.delta", x=now / base, P=P),
                      delta_color="off", delta_arrow="off")
    st.markdown(t("step1.whatif.cost", N=alt.num_patches, T=alt.tokens, T2=alt.attention_entries, P=P,
                  T0=geo.tokens, x=alt.attention_entries / geo.attention_entries))
    if S < Q:
        st.caption(t("step1.stride.caption", overlap=alt.overlap, used_h=alt.used[0], used_w=alt.used[1], H=s.H, W=s.W))
    st.info(t("step1.whatif.trained", P=P))


what_if()

# --- the same trade-off, trained: the patch-size study (python -m vit_core.studies run)
st.subheader(t("step1.study.title"))
st.markdown(t("step1.study.lead", epochs=claims.SHORT_EPOCHS, n=claims.SIZES[-1]))
study = claims.ablation("patch_size", "patch_size")
rows = claims.patch_rows(study)
if study.missing:
    st.caption(t("step1.study.missing", left=", ".join(j.split("-")[1] for j in study.missing)))
if rows:
    st.dataframe({t("step1.study.col.P"): [r["P"] for r in rows], t("step1.study.col.T"): [r["tokens"] for r in rows],
                  t("step1.study.col.acc"): [f"{r['cell'].mean:.2%} ({len(r['cell'].seeds)})" for r in rows],
                  t("step1.study.col.train"): [f"{r['train_ips']:,.0f}" for r in rows],
                  t("step1.study.col.test"): [f"{r['test_ips']:,.0f}" for r in rows]}, hide_index=True)
    st.caption(t("step1.study.caption"))
else:
    st.info(t("step1.study.none_yet"))
