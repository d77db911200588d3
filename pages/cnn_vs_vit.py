"""CNN vs ViT reach: how far a layer can see (receptive field), how far ViT heads do look (attention distance),
where one output's gradient lands (ERF), and which model wins on how much data. The CNN and the data-efficiency
runs are files other commands make; the state keys "cnn.model" and "cnn.de_dir" (or the variables
VIT_EXPLORER_CNN / VIT_EXPLORER_EXPERIMENTS) point elsewhere."""

import streamlit as st

import ui
from vit_core import analysis, claims
from vit_core.viz.shared import reach as vz

t = ui.t
lv = ui.page("cnn", vit_only=True)
tr, s = lv.trace, lv.trace.shapes
VIT, CNN, OURS = t("cnn.model.vit"), t("cnn.model.cnn"), t("cnn.model.cnn_ours")
cnn_id, cnn_card = ui.cnn_model()
with st.expander(t("cnn.patch.pick"), expanded=False):
    r, c = ui.patch_picker(tr)
st.caption(t("cnn.patch.now", r=r, c=c))

# 1 · theoretical receptive field ---------------------------------------------------------------
ui.lead(t("cnn.rf.header"), t("cnn.rf.intro"), caption=t("cnn.rf.legend"), more=(t("cnn.rf.more"), t("cnn.rf.detail")))
nets = analysis.reach_networks(ui.current_image(), cnn_card)
curves, chosen = {}, {}
for col, net in zip(st.columns(3), nets.values()):
    name = net.name or OURS
    picked = col.select_slider(t("cnn.rf.layer", net=name), net.names, key=ui.setting(f"cnn.rf.{net.key}", net.default))
    at = analysis.field_on_image(net, picked, (r, c), tr.grid)
    col.metric(t("cnn.rf.metric", net=name, layer=picked), t("cnn.px", v=at.field.rf))
    with col:
        ui.plot(vz.rf_on_image(net.view, at.span_y, at.span_x, patch_box=at.patch_box,
                               title=t("cnn.rf.fig", net=name, H=at.size[0], W=at.size[1]),
                               hover=t("cnn.rf.hover", layer=picked, rf=at.field.rf)), key=f"cnn.rf.fig.{net.key}")
    col.caption(t("cnn.rf.caption", jump=at.field.jump, pct=at.cover, side=at.side))
    curves[name], chosen[name] = (net.names, at.rfs), at.index
if cnn_card is None:
    st.info(t("cnn.rf.no_cnn"))
st.latex(vz.rf_formula(name, at))  # the last network's chosen layer

# 2 · how far ViT heads look, next to the CNNs' fields ------------------------------------------------
kind, samples = ui.sample_set(lv)
ar = ui.attention_reach(lv, samples)
left, right = st.columns(2)
with left:
    st.subheader(t("cnn.rf.depth_header"))
    refs = {t("cnn.rf.ref224", side=nets["resnet"].side): nets["resnet"].side}
    if "cnn" in nets:
        refs[t("cnn.rf.ref_cnn", side=nets["cnn"].side)] = nets["cnn"].side
    ui.plot(vz.rf_by_depth(curves, references=refs, selected=chosen, title=t("cnn.rf.depth_title"),
                           x_title=t("cnn.rf.depth_x"), y_title=t("cnn.rf.depth_y"), hover=t("cnn.rf.depth_hover")),
            key="cnn.rf.depth")
    st.caption(t("cnn.rf.depth_caption"))
with right:
    st.subheader(t("cnn.dist.header"))
    labels = {"current": t("cnn.dist.current"), "average": t(f"cnn.dist.set.{kind}", n=len(samples)),
              "mean": t("cnn.dist.mean"), "ceiling": t("cnn.dist.ceiling", d=ar.ceiling), "head": t("app.head"),
              "unit": t("cnn.unit")}
    ui.plot(vz.attention_distance(ar.current, ar.average, ar.ceiling, names=labels, title=t("cnn.dist.title"),
                                  x_title=t("cnn.dist.x"), y_title=t("cnn.dist.y", H=s.H, W=s.W)), key="cnn.dist")
    st.caption(t("cnn.dist.caption"))
st.latex(vz.distance_formula(tr.grid, t("cnn.px", v=s.P), t("cnn.dist.uniform"), t("cnn.px", v=f"{ar.ceiling:.1f}")))
st.markdown(t("cnn.dist.explain"))
(a, b), (pa, pb), (lo, hi) = ar.first, ar.first_share, ar.last
measured = t("cnn.dist.measured", set=labels["average" if ar.average is not None else "current"], L=s.L, a=a, b=b,
             pa=pa, pb=pb, c=lo, e=hi, ceiling=ar.ceiling)
st.markdown(ui.join(measured, t(f"cnn.dist.trend.{ar.trend}", m0=ar.first_mean, m1=ar.last_mean, L=s.L)))
ui.show_tensor(t("cnn.dist.tensor"), ar.current)

# 3 · effective receptive field --------------------------------------------------------------------
ui.lead(t("cnn.erf.header"), t("cnn.erf.intro"), more=(t("cnn.erf.more"), t("cnn.erf.detail")))
st.latex(vz.erf_formula(s.H, s.W))
layer, _ = ui.layer_head_picker(s.L, s.heads, key="cnn", with_head=False)
erf = ui.erf_reach(lv, cnn_id, cnn_card, layer, (r, c))  # like with like: the CNN beside a ViT reading its input
ce, k, vf, cf, box = erf.cnn, erf.cnn_index, erf.fractions, erf.cnn_fractions, erf.plan.patch_box
hover, cbar, reached = t("cnn.erf.hover"), t("cnn.erf.cbar"), analysis.ERF_THRESHOLD  # share of the peak that counts
erf_cols = st.columns(2)
with erf_cols[0]:
    ui.plot(vz.erf_map(lv.display, erf.map, patch_box=box, hover=hover, colorbar_title=cbar,
                       title=t("cnn.erf.vit_title", layer=layer + 1, token=erf.plan.token)), key="cnn.erf.vit")
    st.metric(t("cnn.erf.fraction", model=VIT, threshold=reached), f"{erf.fraction:.1%}")
if ce is not None:
    with erf_cols[1]:
        title = t("cnn.erf.cnn_title", layer=ce.names[k], i=ce.cells[k][0], j=ce.cells[k][1])
        ui.plot(vz.erf_map(nets["cnn"].view, erf.cnn_map, patch_box=box, rf_box=ce.boxes[k], hover=hover,
                           colorbar_title=cbar, title=title), key="cnn.erf.cnn")
        st.metric(t("cnn.erf.fraction", model=OURS, threshold=reached), f"{cf[k]:.1%}")
    st.caption(t("cnn.erf.pairing", layer=layer + 1, cnn_layer=ce.names[k], k=k + 1, n=len(ce.names)))
    ui.plot(vz.erf_by_depth({VIT: 100 * vf, OURS: 100 * cf}, selected={VIT: layer, OURS: k},
                            title=t("cnn.erf.depth_title", threshold=reached), x_title=t("cnn.erf.depth_x"),
                            y_title=t("cnn.erf.depth_y"), hover=t("cnn.erf.depth_hover")), key="cnn.erf.depth")
    st.markdown(t("cnn.erf.measured", layer=layer + 1, vit=vf[layer], cnn_layer=ce.names[k], cnn=cf[k], vit0=vf[0],
                  cnn0=cf[0], last=ce.names[-1], vitL=vf[-1], cnnL=cf[-1], L=s.L))
else:
    erf_cols[1].info(t("cnn.erf.other_model" if cnn_card else "cnn.erf.no_cnn"))
ui.show_tensor(t("cnn.erf.tensor"), erf.map)

# 4 · data efficiency ------------------------------------------------------------------------------
ui.lead(t("cnn.de.header"), t("cnn.de.claim"))
loaded = ui.data_efficiency()
if loaded:
    de, tb = loaded
    ui.de_figures(de, tb, VIT, CNN)
    ui.de_table(tb)
    said = claims.de_verdict(tb.rows, ui.lang())
    ui.bullets(said, header=t("cnn.de.ours"))
    ui.bullets(claims.de_rules(de, ui.lang()), header=t("cnn.de.rules"))
    ui.budget_table(claims.budget_table(de))
    st.code("python -m vit_core.studies run --threads 1   # twice, for two cores; resumable", language="bash")
st.info(t("cnn.de.caveat"))

# 5 · takeaways ------------------------------------------------------------------------------------
st.header(t("cnn.take.header"))
ui.bullets([t("cnn.take.local", b=ar.first[1], pb=ar.first_share[1]), t("cnn.take.bias"), t("cnn.take.data"),
            t("cnn.take.erf", vit=vf[0], cnn=cf[0], cnn_layer=ce.names[0]) if ce is not None else "",
            ui.join(t("cnn.take.measured"), said[0]) if loaded else ""])
