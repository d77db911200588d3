"""Attention rollout lab: where the CLS token's input comes from (Abnar & Zuidema 2020), a class-specific
gradient rollout and occlusion sensitivity beside it, how well the three agree, and one deletion/insertion
check of all three against random patch orders."""

import streamlit as st

import ui
from vit_core import analysis, experiments as ex
from vit_core.viz.shared import experiments as vx, rollout as vz

t = ui.t
lv = ui.page("rollout", vit_only=True)
tr = lv.trace
s = tr.shapes
N, T, L, H = s.N, s.T, s.L, s.heads
names = lv.class_names()
st.info(t("rollout.upload_hint", name=ui.image_label(), classes=len(names)))

# --- controls: rollout is cheap, so every change redraws at once
c = st.columns([1, 1.3, 1.4, 1.6])
residual = c[0].toggle(t("rollout.residual"), key=ui.setting("rollout.residual", True), help=t("rollout.residual_help"))
fusions = {f: t(f"rollout.fusion.{f}") for f in ("mean", "max", "min")}
fusion = ui.choice(c[1].radio, t("rollout.fusion"), fusions, fusions, key="rollout.fusion", default="mean",
                   horizontal=True, help=t("rollout.fusion_help"))
discard = c[2].slider(t("rollout.discard"), 0.0, 0.95, step=0.05, key=ui.setting("rollout.discard", 0.0),
                      help=t("rollout.discard_help"))
first, last = c[3].slider(t("rollout.layers"), 1, L, key=ui.setting(f"rollout.layers.{L}", (1, L)),
                          help=t("rollout.layers_help"))
settings = analysis.RolloutSettings(residual, fusion, discard, start_layer=first - 1, end_layer=last)
roll = analysis.rollout_map(tr, settings)  # the CLS row of R over the patches, its sums and its top patches
classes = {i: t("rollout.class_option", name=names[i], p=prob) for i, prob in analysis.top_classes(tr, 5)}

# --- rollout beside one raw attention map
pick = st.columns(2)
pick[0].caption(t("rollout.rollout_settings"))
with pick[1]:
    layer, head = ui.layer_head_picker(L, H, key="rollout")
left, right = st.columns(2)
with left:
    ui.map_plot(lv, roll.values, colorbar=t("rollout.cbar.rollout"), title=t("rollout.fig.rollout", a=first, b=last),
                key="rollout.map")
    st.caption(t("rollout.rollout_caption"))
with right:  # the CLS row of one head, patch keys only
    ui.map_plot(lv, analysis.cls_attention(tr, layer, head), colorbar=t("rollout.cbar.attention"),
                title=t("rollout.fig.raw", l=layer + 1, h=head + 1), key="rollout.raw")
    st.caption(t("rollout.raw_caption"))

# --- for one class: gradient rollout and occlusion (with the check below: run unasked when cheap)
st.subheader(t("rollout.gradient.title"))
c = st.columns([1, 2])
cls = ui.choice(c[0].selectbox, t("rollout.class"), classes, classes, key="rollout.class", default=next(iter(classes)))
c[1].markdown(t("rollout.gradient.lead"))
c[1].expander(t("rollout.gradient.more")).markdown(t("rollout.gradient.body", a=first, b=last))
left, right = st.columns(2)
steps, orders = ui.faith_budget(N)  # set by the sliders of the check further down
passes = ex.comparison_passes(N, steps, orders)
res = ui.checked_comparison(lv, cls, settings, steps=steps, orders=orders, passes=passes)
grad_map = None
try:
    grad_map = analysis.gradient_rollout_map(tr, ui.attention_gradients(lv, cls), settings)
    with left:
        ui.map_plot(lv, grad_map, colorbar=t("rollout.cbar.gradient"), title=t("rollout.fig.gradient", name=names[cls]),
                    key="rollout.grad")
except Exception as err:  # noqa: BLE001 - out of memory on a big model: say so, the other maps stay
    left.warning(ui.error_text(err))
with right:
    if res is None:
        st.info(t("rollout.occlusion.costly", passes=passes))
        ui.ask_button(t("rollout.faith.run", runs=passes), key="rollout.run", state="rollout.faith")
    else:
        ui.plot(vx.map_over(lv.display, res.maps["occlusion"], s.P, colorbar_title=t("rollout.cbar.occlusion"),
                            diverging=True, hover="%{z:.4f}", title=t("rollout.fig.occlusion", name=names[cls]),
                            height=440), key="rollout.occlusion")
        st.caption(t("rollout.occlusion.caption", p=res.base_prob, N=N, s=res.occlusion_s,
                     device=res.device_kind.upper()))
available = {"occlusion": res is not None, "rollout": True, "gradient": grad_map is not None}
maps = {m: t(f"rollout.map.{m}") for m in ex.MAPS}  # the tables name all three; the check offers those drawn
if res is not None:
    ui.table({t("rollout.agree.pair"): [f"{maps[a]} ↔ {maps[b]}" for a, b in res.correlation],
              t("rollout.agree.rho"): list(res.correlation.values())}, {t("rollout.agree.rho"): "%.2f"})
    st.caption(t("rollout.agree.caption", N=N, a=first, b=last))

# --- what rollout is, with this image's numbers
st.subheader(t("rollout.what.title"))
st.markdown(t("rollout.what.lead"))
st.expander(t("rollout.what.more")).markdown(t("rollout.what.body"))
for line in vz.rollout_formula(residual=residual, fusion=fusion, discard=discard, first=first, last=last, heads=H,
                               tokens=T, patches=N, grid=tr.grid):
    st.latex(line)
ui.rollout_numbers(roll)  # where the CLS row's weight went, its top patches, the map as numbers

# --- which map is faithful? deletion / insertion of all three against random orders
st.subheader(t("rollout.faith.title"))
st.markdown(t("rollout.faith.lead", name=names[cls]))
st.expander(t("rollout.faith.more")).markdown(t("rollout.faith.intro", name=names[cls]))
f = st.columns(3)
target = ui.choice(f[0].radio, t("rollout.faith.map"), [m for m in maps if available[m]], maps, key="rollout.target",
                   default="rollout")
f[1].slider(t("rollout.faith.steps"), 2, min(N, 49), key=f"rollout.steps.{N}", help=t("rollout.faith.steps_help"))
f[2].slider(t("rollout.faith.orders"), 1, 5, key="rollout.orders", help=t("rollout.faith.orders_help"))
curves = res.curves(target) if res is not None else None
if res is not None:
    ui.auc_table(res.auc_table(), maps)
    st.caption(t("rollout.faith.table_caption", n=orders, steps=steps))
    ui.faithfulness_curves(curves, names=(maps[target], t("rollout.faith.random" if orders > 1 else
                                                           "rollout.faith.random_one", n=orders)),
                           y_title=t("rollout.faith.y", name=names[cls]), key="rollout")
    verdict = res.verdict(target)
    (st.success if verdict == "both" else st.warning)(t(f"rollout.faith.verdict.{verdict}", margin=ex.MARGIN))
    st.info(t("rollout.faith.lesson"))
else:
    st.caption(t("rollout.faith.stale" if st.session_state.get("rollout.faith") else "rollout.faith.waiting"))
st.expander(t("rollout.faith.read_title")).markdown(t("rollout.faith.read"))

# --- export what is shown
st.subheader(t("rollout.export.title"))
st.caption(t("rollout.export.caption", map=maps[target]))
shown = {"rollout": roll.values, "gradient": grad_map, "occlusion": res and res.maps["occlusion"]}[target]
out = vz.map_export(lv.card, lv.image_name, tr, settings, target, shown, cls, names[cls], curves)
ui.map_exports(lv, out.values, out.meta, out.curves, suffix=target, key="rollout")
