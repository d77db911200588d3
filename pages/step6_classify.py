"""Step 6: the CLS token's final state -> LayerNorm -> linear head -> logits -> softmax -> top-k classes."""

import streamlit as st

import ui
from vit_core import analysis
from vit_core.viz.shared import common as viz, encoder as vz

t = ui.t
lv = ui.page("step6", vit_only=True)
tr = lv.trace
out = analysis.head_readout(lv.model, tr)
if out is None:  # num_classes = 0: a feature extractor has nothing to classify
    st.info(t("step6.no_head"))
    st.stop()
heads = out.heads
D, K, L = tr.shapes.D, tr.logits.shape[-1], tr.shapes.L
names = lv.class_names()
x = r"\times"

st.latex(rf"\underbrace{{y}}_{{{D}}} = \mathrm{{LN}}(z_{{{L}}}^0), \qquad"
         rf" \underbrace{{\text{{logits}}}}_{{{K}}} = y\,\underbrace{{W}}_{{{D}{x}{K}}} + \underbrace{{b}}_{{{K}}}, \qquad"
         rf" p = \mathrm{{softmax}}(\text{{logits}}) \in [0, 1]^{{{K}}}")

# --- stage 1 and 2: the CLS token's last state, and the same numbers after the final LayerNorm
st.subheader(t("step6.norm.title", D=D))
fn = analysis.final_norm(tr)
st.markdown(t("step6.norm.text", z_mean=fn.z_mean, z_std=fn.z_std, y_mean=fn.y_mean, y_std=fn.y_std))
for name, row in (("z", fn.z), ("y", fn.y)):  # each on its own scale: LayerNorm changes the scale
    ui.plot(viz.heatmap(row[None], colorbar_title=t("step6.value"), diverging=True, height=170, y=[""],
                        title=t(f"step6.row.{name}", L=L), x_title=t("step6.axis.dim", D=D),
                        hover=t("step6.hover.vector")), key=f"step6.{name}")
    ui.show_tensor(t(f"step6.tensor.{name}", L=L), row)

# --- stage 3 and 4: logits and probabilities, the top k of them
st.subheader(t("step6.head.title", D=D, K=K))
kmax = K if K <= 10 else min(K, 25)  # ten classes fit on screen; a thousand do not
st.session_state["step6.topk"] = min(st.session_state.get("step6.topk", kmax if K <= 10 else 5), kmax)
k = st.slider(t("step6.topk", K=K), 1, kmax, key="step6.topk")
top = analysis.top_k(tr, k)
top_names = [names[i] for i in top.indices]
if k < K:
    st.caption(t("step6.topk.caption", k=k, K=K, rest=top.rest))
left, right = st.columns(2)
with left:
    ui.plot(viz.bars(top_names, top.logits, title=t("step6.fig.logits", K=K), x_title=t("step6.axis.logit"),
                     text_format="{:.2f}", highlight=0), key="step6.logits")
with right:
    ui.plot(viz.bars(top_names, top.probs, title=t("step6.fig.probs", K=K), x_title=t("step6.axis.prob"),
                     highlight=0, range_=(0, 1)), key="step6.probs")
for label, tensor in ((t("step6.tensor.W", D=D, K=K), heads[0][0].T), (t("step6.tensor.b"), heads[0][1]),
                      (t("step6.tensor.logits"), tr.logits[0]), (t("step6.tensor.probs"), tr.probs[0])):
    ui.show_tensor(label, tensor)

# --- DeiT: two heads, one per prefix token, averaged
if len(heads) == 2:
    st.subheader(t("step6.deit.title"))
    st.markdown(t("step6.deit.text"))
    st.latex(r"\text{logits} = \tfrac{1}{2}\big(\mathrm{LN}(z_L^\text{cls})\,W + b"
             r" \;+\; \mathrm{LN}(z_L^\text{dist})\,W_\text{dist} + b_\text{dist}\big)")
    series = {t("step6.deit.cls"): top.head_logits[0], t("step6.deit.dist"): top.head_logits[1],
              t("step6.deit.mean"): top.logits}
    ui.plot(vz.grouped_bars(top_names, series, x_title=t("step6.axis.logit")), key="step6.deit")

# --- the check: the numbers above, recomputed from z_L and the model's own weights, equal the trace
st.success(t("step6.check", ln=f"{out.ln_diff:.1e}", head=f"{out.head_diff:.1e}"))
