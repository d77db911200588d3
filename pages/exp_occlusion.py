"""Experiment · Occlusion next to attention: gray out each patch and watch the class probability, beside
attention rollout and gradient rollout, with how well the three agree and how faithful each is."""

import pandas as pd
import streamlit as st

import ui
from vit_core import experiments as ex
from vit_core.viz import experiments as vz
from vit_core.viz.rollout import curve_figure

t = ui.t
AUTO_MACS = 2e10  # comparisons cheaper than this (about a second on a CPU) run without a click
RANDOM_ORDERS = 2
lv = ui.page("exp.occlusion", vit_only=True)
tr = lv.trace
s = tr.shapes
names = lv.class_names()
steps = s.N if s.N <= 64 else 16
passes = ex.comparison_passes(s.N, steps, RANDOM_ORDERS)


@st.cache_data(show_spinner=False, max_entries=16)
def comparison(model_id: str, digest: str, cls: int, _trace) -> ex.MapComparison:
    return ex.compare_maps(ui.load_model(model_id)[0], _trace, cls, steps=steps, random_orders=RANDOM_ORDERS)


top = tr.probs[0].topk(min(5, len(names)))
classes = {int(i): t("exp.occlusion.class_option", name=names[i], p=float(v)) for v, i in zip(top.values, top.indices)}
cls = ui.choice(st.selectbox, t("exp.occlusion.class"), classes, classes, key="exp.occlusion.class",
                default=next(iter(classes)))
key = (lv.model_id, lv.digest, cls)
cheap = passes * ex.forward_macs(lv.model, s.T) <= AUTO_MACS
if cheap or st.session_state.get("exp.occlusion.done") == key or st.button(
        t("exp.occlusion.run", passes=passes), type="primary", key="exp.occlusion.run"):
    with st.spinner(t("exp.occlusion.spinner", passes=passes)):
        res = comparison(lv.model_id, lv.digest, cls, tr)
    st.session_state["exp.occlusion.done"] = key
else:
    st.info(t("exp.occlusion.costly", passes=passes))
    st.stop()

# --- three maps of "what matters" for this class
hover = t("exp.occlusion.hover")
cols = st.columns(3)
for col, name in zip(cols, ex.MAPS):
    with col:
        ui.plot(vz.map_over(lv.display, res.maps[name].numpy(), s.P, colorbar_title=t(f"exp.occlusion.cbar.{name}"),
                            diverging=name == "occlusion", zmin=None if name == "occlusion" else 0, hover=hover,
                            title=t(f"exp.occlusion.map.{name}"), height=380), key=f"exp.occlusion.{name}")
        st.caption(t(f"exp.occlusion.caption.{name}", p=res.base_prob, N=s.N))
st.caption(t("exp.occlusion.timing", N=s.N, s=res.occlusion_s, device=lv.model.device.type.upper()))

# --- do they agree? rank correlation on this image
st.subheader(t("exp.occlusion.agree.title"))
st.dataframe(pd.DataFrame({t("exp.occlusion.agree.pair"): [f"{t(f'exp.occlusion.name.{a}')} ↔ {t(f'exp.occlusion.name.{b}')}"
                                                           for a, b in res.correlation],
                           t("exp.occlusion.agree.rho"): list(res.correlation.values())}),
             hide_index=True, column_config={t("exp.occlusion.agree.rho"): st.column_config.NumberColumn(format="%.2f")})
st.caption(t("exp.occlusion.agree.caption", N=s.N))

# --- are they faithful? deletion / insertion against random patch orders
st.subheader(t("exp.occlusion.faith.title"))
st.markdown(t("exp.occlusion.faith.body", name=names[cls], orders=RANDOM_ORDERS))
rows = list(ex.MAPS) + ["random"]
rand = res.faithfulness["random"]
st.dataframe(pd.DataFrame({
    t("exp.occlusion.faith.map"): [t(f"exp.occlusion.name.{r}") for r in rows],
    t("exp.occlusion.faith.deletion"): [res.faithfulness[r].deletion_auc for r in rows],
    t("exp.occlusion.faith.insertion"): [res.faithfulness[r].insertion_auc for r in rows],
    t("exp.occlusion.faith.beats"): [t("exp.occlusion.faith.both") if f.deletion_auc < rand.deletion_auc
                                     and f.insertion_auc > rand.insertion_auc else t("exp.occlusion.faith.not_both")
                                     for f in (res.faithfulness[r] for r in rows[:-1])] + ["—"]}),
    hide_index=True, column_config={t(f"exp.occlusion.faith.{c}"): st.column_config.NumberColumn(format="%.3f")
                                    for c in ("deletion", "insertion")})
pick = ui.choice(st.segmented_control, t("exp.occlusion.faith.curve_of"), ex.MAPS,
                 {n: t(f"exp.occlusion.name.{n}") for n in ex.MAPS}, key="exp.occlusion.curve", default="occlusion")
curve = dict(names=(t(f"exp.occlusion.name.{pick}"), t("exp.occlusion.name.random")), x_title=t("exp.occlusion.faith.x"),
             y_title=t("exp.occlusion.faith.y", name=names[cls]), height=340)
g = st.columns(2)
for col, kind in zip(g, ("deletion", "insertion")):
    with col:
        ui.plot(curve_figure(res.fractions, getattr(res.faithfulness[pick], kind), getattr(rand, kind),
                             title=t(f"exp.occlusion.faith.{kind}_fig"), **curve), key=f"exp.occlusion.{kind}")
st.info(t("exp.occlusion.lesson"))
