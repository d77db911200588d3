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

st.latex(vz.patch_count_formula(s.H, s.W, P, tr.grid, geo.patch_dim))
st.markdown(t("step1.live", **s._asdict(), PPC=geo.patch_dim))
st.caption(t("step1.b16", N=analysis.VIT_B16.num_patches, PPC=analysis.VIT_B16.patch_dim))


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
        cut = analysis.patch_cut(tr, lv.display, lv.card.preprocess, (r, c))  # what the model receives
        ui.plot(viz.image_grid(cut.picture, height=220), key="step1.crop")
        names = [t(f"step1.channel.{C}.{i}") for i in range(C)] if C in (1, 3) else [str(i) for i in range(C)]
        ui.plot(vz.patch_pixels(cut.values.numpy(), channel_titles=names, colorbar_title=t("step1.patch.colorbar"),
                                value_range=cut.value_range, hover=t("step1.patch.hover")), key="step1.pixels")
        st.caption(t("step1.patch.caption", mean=cut.mean, std=cut.std))
        ui.show_tensor(t("step1.tensor.patch", r=r, c=c), cut.values)
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
        ui.plot(vx.cut_figure(lv.display, Q, S, alt.grid, title=t("step1.stride.fig", P=Q, S=S), height=480),
                key="step1.whatif.grid")
    with numbers:
        st.latex(vx.stride_formula((s.H, s.W), Q, S, alt.num_patches))
        for label, now, base in ex.stride_counts(alt, geo):
            ui.note_metric(t(f"step1.whatif.{label}"), f"{now:,}", t("step1.whatif.delta", x=now / base, P=P))
    st.markdown(t("step1.whatif.cost", N=alt.num_patches, T=alt.tokens, T2=alt.attention_entries, P=P,
                  T0=geo.tokens, x=alt.attention_entries / geo.attention_entries))
    if S < Q:
        st.caption(t("step1.stride.caption", overlap=alt.overlap, used_h=alt.used[0], used_w=alt.used[1], H=s.H, W=s.W))
    st.info(t("step1.whatif.trained", P=P))


what_if()

st.subheader(t("step1.study.title"))  # the same trade-off, trained: the patch-size study of vit_core.studies
st.markdown(t("step1.study.lead", epochs=claims.SHORT_EPOCHS, n=claims.SIZES[-1]))
study, cost = claims.ablation("patch_size", "patch_size"), claims.patch_cost()
if study.missing:
    st.caption(t("step1.study.missing", left=", ".join(j.split("-")[1] for j in study.missing)))
if study.cells or cost:
    ui.table({t(f"step1.study.col.{k}"): v for k, v in claims.patch_table(study, cost).items()})
    ui.bullets(claims.patch_sentences(study, cost, ui.lang()))
else:
    st.info(t("step1.study.none_yet"))
