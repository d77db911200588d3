"""Step 3 · Position embedding: the learned E_pos, how alike its positions are (ViT Fig. 7 centre), and resampling."""

import streamlit as st

import ui
from vit_core import analysis, claims
from vit_core.experiments import VIT_TABLE8
from vit_core.model import resample_pos_embed
from vit_core.viz.shared import common as viz, steps as vz

t = ui.t
lv = ui.page("step3")
tr = lv.trace
s = tr.shapes
P, h, w, prefix, T, D = s.P, s.h, s.w, s.prefix, s.T, s.D
pos = tr.pos_embed  # (1, T, D): prefix slots first, then the h·w grid row by row
slot = lambda i: t(f"step3.slot.{i}") if i < 2 else t("step3.slot.other", i=i)  # noqa: E731 - CLS, DIST, ...

x = r"\times"
lead = r"x_{\mathrm{cls}};\, x_{\mathrm{dist}}" if prefix == 2 else r"x_{\mathrm{cls}}"  # DeiT: two prefix tokens
st.latex(rf"z_0 = [\,{lead};\, x_p^1 E;\, \dots;\, x_p^{{{h * w}}} E\,] + E_{{pos}}, \qquad "
         rf"E_{{pos}} \in \mathbb{{R}}^{{T {x} D}} = \mathbb{{R}}^{{({prefix} + {h}\cdot{w}) {x} {D}}}"
         rf" = \mathbb{{R}}^{{{T} {x} {D}}}")

r, c = ui.patch_picker(tr)
REF = "vx.step3.ref"
refs = ["patch"] + [str(i) for i in range(prefix)]
if st.session_state.get("vx.step3.seen") != (r, c):
    st.session_state["vx.step3.seen"] = (r, c)  # a newly picked patch becomes the reference again
    st.session_state[REF] = "patch"
labels = {o: t("step3.ref.patch", r=r, c=c) if o == "patch" else slot(int(o)) for o in refs}
ref = ui.choice(st.radio, t("step3.ref.label"), refs, labels, key=REF, default="patch", horizontal=True)
token = prefix + r * w + c if ref == "patch" else int(ref)
pre_sims, sims = analysis.pos_embed_row(pos, token, tr.grid, prefix)

left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader(t("step3.map.title", name=t("step3.ref.patch", r=r, c=c) if ref == "patch" else slot(token)))
    fig = vz.grid_map(sims.numpy(), colorbar_title=t("step3.cosine"), hover=t("step3.map.hover"),
                      selected=(r, c) if ref == "patch" else None)
    ui.clickable_chart(fig, key="step3.map", grid=tr.grid)
    st.caption(t("step3.map.prefix", sims=t("step3.map.sep").join(t("step3.map.item", slot=slot(i), v=float(v))
                                                                   for i, v in enumerate(pre_sims))))
    if ref != "patch":
        st.caption(t("step3.map.offgrid"))
with right:
    st.subheader(t("step3.all.title", h=h, w=w))
    fig, k = vz.similarity_mosaic(analysis.pos_embed_similarity(pos, tr.grid, prefix).numpy(),
                                  colorbar_title=t("step3.cosine"), selected=(r, c))
    ui.plot(fig, key="step3.all")
    st.caption(ui.join(t("step3.all.caption", h=h, w=w), t("step3.all.cut", k=k) if k > 1 else ""))
ui.show_tensor("E_pos", pos[0])

st.subheader(t("step3.resample.title"))
st.markdown(t("step3.resample.intro", H=s.H, W=s.W, h=h, w=w))
a, b = st.columns(2)
size = []
for col, name, n in [(a, "height", s.H), (b, "width", s.W)]:
    options = [P * i for i in range(1, 4 * max(h, w) + 1)]
    key = ui.persist(f"vx.step3.{name}")
    if st.session_state.get(key) not in options:  # default: a wider picture, so the grid is not square
        st.session_state[key] = n if name == "height" else P * (3 * w // 2)
    size.append(col.select_slider(t(f"step3.resample.{name}", P=P), options, key=key))
new_grid = (size[0] // P, size[1] // P)
new_pos = resample_pos_embed(pos, new_grid, tr.grid, prefix)  # (1, prefix + h'·w', D)
cell = analysis.corresponding_cell((r, c), tr.grid, new_grid)
new_token = prefix + cell[0] * new_grid[1] + cell[1] if ref == "patch" else int(ref)
_, new_sims = analysis.pos_embed_row(new_pos, new_token, new_grid, prefix)
kept = (new_pos[0, :prefix] - pos[0, :prefix]).abs().max().item()
grid_col, numbers = st.columns([3, 2], gap="large")
with grid_col:
    ui.plot(vz.grid_map(new_sims.numpy(), colorbar_title=t("step3.cosine"), hover=t("step3.map.hover"),
                        selected=cell if ref == "patch" else None,
                        title=t("step3.resample.map", H=size[0], W=size[1],
                                name=t("step3.ref.patch", r=cell[0], c=cell[1]) if ref == "patch" else slot(token))),
            key="step3.resampled")
with numbers:
    st.metric(t("step3.resample.grid"), f"{new_grid[0]} × {new_grid[1]}")
    st.metric(t("step3.resample.n"), f"{new_grid[0] * new_grid[1]:,}", t("step3.resample.was", v=h * w),
              delta_color="off", delta_arrow="off")
    st.metric(t("step3.resample.t"), f"{new_pos.shape[1]:,}", t("step3.resample.was", v=T), delta_color="off",
              delta_arrow="off")
    st.markdown(t("step3.resample.cls", prefix=prefix, diff=kept))
st.info(t("step3.paper"))

# --- trained without them: the position-embedding study
st.subheader(t("step3.ablation.title"))
st.markdown(t("step3.ablation.lead", epochs=claims.SHORT_EPOCHS, n=claims.SIZES[-1]))
ab = claims.ablation("position_embeddings", "position_embeddings")
kinds = [k for k in ("learned", "none", "sincos2d") if k in ab.cells]
if kinds:
    c = [ab.cells[k] for k in kinds]
    names = [t(f"step3.ablation.kind.{k}") for k in kinds]
    ui.plot(viz.ranges(names, [x.mean for x in c], [x.lo for x in c], [x.hi for x in c], title=t("step3.ablation.fig"),
                       x_title=t("step3.ablation.acc")), key="step3.ablation")
    st.dataframe({t("step3.ablation.col.kind"): names,
                  t("step3.ablation.col.acc"): [f"{x.mean:.2%} ({x.lo:.2%} – {x.hi:.2%})" for x in c],
                  t("step3.ablation.col.seeds"): [", ".join(map(str, x.seeds)) for x in c],
                  t("step3.ablation.col.cpu"): [f"{sum(x.cpu_s) / len(x.cpu_s) / 60:.0f}" for x in c]}, hide_index=True)
else:
    st.info(t("step3.ablation.none_yet"))
st.markdown("\n".join("- " + x for x in claims.position_sentences(ab, VIT_TABLE8["1d"] - VIT_TABLE8["none"], ui.lang())))
