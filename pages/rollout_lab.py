"""Attention rollout lab: where the CLS token's input comes from (Abnar & Zuidema 2020), a class-specific
gradient rollout beside it, and a deletion/insertion check of whether either map is faithful."""

import re
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from vit_core import analysis
from vit_core.viz import rollout as vz

t = ui.t
MARGIN = 0.01  # how much lower (deletion) or higher (insertion) an AUC must be than random to count
lv = ui.page("rollout", vit_only=True)
tr = lv.trace
s = tr.shapes
p, h, w, P, N, T, L, H = s.prefix, s.h, s.w, s.P, s.N, s.T, s.L, s.heads
names = lv.class_names()
model_id, digest = lv.model_id, lv.digest
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
settings = dict(residual=residual, head_fusion=fusion, discard_ratio=discard, start_layer=first - 1, end_layer=last)
joint = analysis.attention_rollout(tr.attentions, num_prefix_tokens=p, **settings)  # (1, T, T)
rollout_map = analysis.rollout_to_grid(joint, tr.grid, p)[0]  # (h, w): the CLS row over the patches
top = tr.probs[0].topk(min(5, len(names)))
classes = {int(i): t("rollout.class_option", name=names[i], p=float(v)) for v, i in zip(top.values, top.indices)}

# --- rollout beside one raw attention map, then the class-specific gradient rollout
pick = st.columns(2)
pick[0].caption(t("rollout.rollout_settings"))
with pick[1]:
    layer, head = ui.layer_head_picker(L, H, key="rollout")
raw = tr.attentions[layer][0, head, 0, p:].reshape(h, w)  # CLS row of one head, patch keys only
left, right = st.columns(2)
with left:
    ui.plot(vz.map_overlay(lv.display, rollout_map, P, colorbar_title=t("rollout.cbar.rollout"), height=440,
                           title=t("rollout.fig.rollout", a=first, b=last)), key="rollout.map")
    st.caption(t("rollout.rollout_caption"))
with right:
    ui.plot(vz.map_overlay(lv.display, raw, P, colorbar_title=t("rollout.cbar.attention"), height=440,
                           title=t("rollout.fig.raw", l=layer + 1, h=head + 1)), key="rollout.raw")
    st.caption(t("rollout.raw_caption"))

st.subheader(t("rollout.gradient.title"))
left, right = st.columns(2)
cls = ui.choice(right.selectbox, t("rollout.class"), classes, classes, key="rollout.class", default=next(iter(classes)))
right.markdown(t("rollout.gradient.lead"))
right.expander(t("rollout.gradient.more")).markdown(t("rollout.gradient.body", a=first, b=last))
grad_map = None
try:
    with st.spinner(t("rollout.grad_spinner")):
        grads = ui.attention_gradients(lv, cls)
    R = analysis.gradient_rollout(tr.attentions, grads, start_layer=first - 1, end_layer=last)  # (1, T, T)
    grad_map = analysis.rollout_to_grid(R, tr.grid, p)[0]
    with left:
        ui.plot(vz.map_overlay(lv.display, grad_map, P, colorbar_title=t("rollout.cbar.gradient"), height=440,
                               title=t("rollout.fig.gradient", name=names[cls])), key="rollout.grad")
except Exception as err:  # noqa: BLE001 - out of memory on a big model: say so, the other maps stay
    left.warning(ui.error_text(err))

# --- what rollout is, with this image's numbers
st.subheader(t("rollout.what.title"))
st.markdown(t("rollout.what.lead"))
st.expander(t("rollout.what.more")).markdown(t("rollout.what.body"))
x, fused = r"\times", rf"\operatorname{{{fusion}}}_{{h}}\,W_{{\mathrm{{att}},l}}"
if discard > 0:
    fused = rf"\operatorname{{drop}}_{{{discard:.0%}}}\big({fused}\big)".replace("%", r"\%")
mixed = rf"0.5\,{fused} + 0.5\,I" if residual else fused
chain = rf"\tilde A_{{{last}}} \cdots \tilde A_{{{first}}}" if last > first else rf"\tilde A_{{{first}}}"
st.latex(rf"\tilde A_l = \operatorname{{rownorm}}\big({mixed}\big), \qquad R = {chain}")
st.latex(rf"W_{{\mathrm{{att}},l}} \in \mathbb{{R}}^{{{H}{x}{T}{x}{T}}}, \quad"
         rf" \tilde A_l,\ R \in \mathbb{{R}}^{{{T}{x}{T}}}, \quad"
         rf" R_{{\mathrm{{CLS}},\,\mathrm{{patches}}}} \in \mathbb{{R}}^{{{N}}} \to {h}{x}{w}")
row = joint[0, 0]  # (T,) how much of each token ended up in CLS
m = st.columns(3)
m[0].metric(t("rollout.live.sum"), f"{float(row.sum()):.4f}", help=t("rollout.live.sum_help"))
m[1].metric(t("rollout.live.patches"), f"{float(row[p:].sum()):.4f}", help=t("rollout.live.patches_help"))
m[2].metric(t("rollout.live.layers"), str(last - first + 1))
best = analysis.top_patches(rollout_map, 5)
st.dataframe(pd.DataFrame(best, columns=[t("rollout.live.row"), t("rollout.live.col"), t("rollout.live.value")]),
             hide_index=True, column_config={t("rollout.live.value"): st.column_config.NumberColumn(format="%.4f")})
st.caption(t("rollout.live.top_caption"))
ui.show_tensor(t("rollout.live.tensor"), rollout_map)

# --- is the map faithful? deletion / insertion against random orders
st.subheader(t("rollout.faith.title"))
st.markdown(t("rollout.faith.lead", name=names[cls]))
st.expander(t("rollout.faith.more")).markdown(t("rollout.faith.intro", name=names[cls]))
maps = {"rollout": t("rollout.map.rollout")} | ({"gradient": t("rollout.map.gradient")} if grad_map is not None else {})
f = st.columns(3)
target = ui.choice(f[0].radio, t("rollout.faith.map"), maps, maps, key="rollout.target", default="rollout")
steps = f[1].slider(t("rollout.faith.steps"), 2, min(N, 49), key=ui.setting(f"rollout.steps.{N}", N if N <= 64 else 8),
                    help=t("rollout.faith.steps_help"))
orders = f[2].slider(t("rollout.faith.orders"), 1, 5, key=ui.setting("rollout.orders", 1),
                     help=t("rollout.faith.orders_help"))
scores = rollout_map if target == "rollout" else grad_map
meta = {"model": lv.card.title or lv.card.name, "image": lv.image_name, "map": target, "query_token": "CLS",
        "grid": [h, w], "patch_size": P, "start_layer": first, "end_layer": last, "class_index": cls,
        "class_name": names[cls]}
if target == "rollout":
    meta |= {"residual": residual, "head_fusion": fusion, "discard_ratio": round(discard, 4)}
check = (model_id, digest, tuple(map(str, meta.values())), steps, orders)


def request_check():
    """The click only leaves a note: a callback runs before any rerun, so the click survives
    ui.page_header's rerun of a page that started without app.py; the run that gets here does the work."""
    st.session_state["rollout.pending"] = True


st.button(t("rollout.faith.run", runs=2 * (steps + 1) * (1 + orders)), type="primary", key="rollout.run",
          on_click=request_check)
if st.session_state.pop("rollout.pending", False):
    try:
        with st.spinner(t("rollout.faith.spinner")):
            result = analysis.model_faithfulness(lv.model, tr.pixels, scores, tr.grid, P, cls, steps=steps,
                                                 random_orders=orders)
        st.session_state["rollout.faith"] = (check, result)
    except Exception as err:  # noqa: BLE001 - the map and its controls stay usable
        ui.show_error(err)
saved = st.session_state.get("rollout.faith")
result = saved[1] if saved and saved[0] == check else None
if result is not None:
    random_name = t("rollout.faith.random" if orders > 1 else "rollout.faith.random_one", n=orders)
    curve = dict(names=(maps[target], random_name), x_title=t("rollout.faith.x"),
                 y_title=t("rollout.faith.y", name=names[cls]), height=380)
    g = st.columns(2)
    for col, kind in zip(g, ("deletion", "insertion")):
        with col:
            ui.plot(vz.curve_figure(result["fractions"], result[kind], result[f"random_{kind}"],
                                    title=t(f"rollout.faith.{kind}"), **curve), key=f"rollout.{kind}")
            col.metric(t(f"rollout.faith.{kind}_auc"), f"{result[f'{kind}_auc']:.3f}",
                       delta=f"{result[f'{kind}_auc'] - result[f'random_{kind}_auc']:+.3f}",
                       delta_color="inverse" if kind == "deletion" else "normal",
                       help=t("rollout.faith.auc_help", random=result[f"random_{kind}_auc"]))
    # "beats" means by a clear margin, so a random model's noise does not read as a faithful map
    good = (result["deletion_auc"] < result["random_deletion_auc"] - MARGIN,
            result["insertion_auc"] > result["random_insertion_auc"] + MARGIN)
    verdict = t("rollout.faith.verdict." + ("both" if all(good) else "some" if any(good) else "none"), margin=MARGIN)
    if all(good):
        st.success(verdict)
    else:
        st.warning(verdict)
elif saved:
    st.caption(t("rollout.faith.stale"))
st.expander(t("rollout.faith.read_title")).markdown(t("rollout.faith.read"))

# --- export what is shown
st.subheader(t("rollout.export.title"))
st.caption(t("rollout.export.caption", map=maps[target]))
stem = (re.sub(r"[^\w-]+", "_", Path(lv.image_name).stem).strip("_")[:40] or "image") + f"_{target}"
e = st.columns(4)
e[0].download_button(t("rollout.export.png"), vz.png_bytes(vz.overlay_image(lv.display, scores, P)),
                     file_name=f"{stem}.png", mime="image/png", on_click="ignore", key="rollout.png")
e[1].download_button(t("rollout.export.csv"), vz.map_csv(scores, meta), file_name=f"{stem}.csv", mime="text/csv",
                     on_click="ignore", key="rollout.csv")
e[2].download_button(t("rollout.export.json"), vz.export_json(scores, meta, result), file_name=f"{stem}.json",
                     mime="application/json", on_click="ignore", key="rollout.json")
if result is not None:
    e[3].download_button(t("rollout.export.curves"), vz.curves_csv(result), file_name=f"{stem}_curves.csv",
                         mime="text/csv", on_click="ignore", key="rollout.curves")
