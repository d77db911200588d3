"""Step 5: the encoder. Per layer and head: who a patch attends to, softmax(qkᵀ/√d) in numbers, Q/K/V,
all heads at once, and what each sub-block adds to the residual stream."""

import pandas as pd
import streamlit as st

import ui
from vit_core import analysis, experiments as ex
from vit_core.viz.shared import common as viz, encoder as vz, experiments as vx

t = ui.t
lv = ui.page("step5", vit_only=True)
tr = lv.trace
s = tr.shapes
p, h, w, P, T, D, L, H = s.prefix, s.h, s.w, s.P, s.T, s.D, s.L, s.heads
hd = D // H
labels = ui.token_labels(tr)
names = lv.class_names()
cost = analysis.attention_cost(T, H, L, D)
x = r"\times"

st.latex(rf"z'_\ell = \mathrm{{MSA}}(\mathrm{{LN}}(\underbrace{{z_{{\ell-1}}}}_{{{T}{x}{D}}})) + z_{{\ell-1}}, \qquad"
         rf" z_\ell = \mathrm{{MLP}}(\mathrm{{LN}}(z'_\ell)) + z'_\ell, \qquad \ell = 1 \dots {L}")
st.latex(rf"A_h = \mathrm{{softmax}}\Big(\frac{{\overbrace{{Q_h}}^{{{T}{x}{hd}}}\,\overbrace{{K_h^\top}}^{{{hd}{x}{T}}}}}"
         rf"{{\sqrt{{{hd}}}}}\Big) \in \mathbb{{R}}^{{{T}{x}{T}}}, \qquad"
         rf" \mathrm{{MSA}} = [A_1 V_1; \dots; A_{{{H}}} V_{{{H}}}]\, W_O, \qquad \mathrm{{MLP}}: {D} \to {lv.card.config.mlp_dim}"
         rf" \xrightarrow{{\mathrm{{GELU}}}} {D}")
st.info(t("step5.cost", T=T, H=H, L=L, per_head=f"{cost['per_head']:,}", per_layer=f"{cost['per_layer']:,}",
          total=f"{cost['total']:,}", mult_adds=f"{cost['mult_adds']:,}"))


@ui.section
def attention():  # layer, head and query patch: changing one reruns this section alone
    layer, head = ui.layer_head_picker(L, H, key="enc")
    r, c = ui.patch_picker(tr)
    query = p + r * w + c  # token index of the selected patch
    lt = tr.layers[layer]
    A = tr.attentions[layer][0]  # (heads, T, T)
    where = dict(l=layer + 1, h=head + 1)

    # --- where the query patch and the CLS token look, in this layer and head
    left, right = st.columns(2)
    with left:
        fig = viz.overlay(lv.display, A[head, query, p:].reshape(h, w), P, colorbar_title=t("step5.attention"), zmin=0,
                          selected=(r, c), clickable=True, title=t("step5.fig.query", r=r, c=c, **where))
        ui.clickable_chart(fig, key="step5.query", grid=tr.grid)
        st.caption(t("step5.query.caption", prefix=float(A[head, query, :p].sum())))
    with right:
        ui.plot(viz.overlay(lv.display, A[head, 0, p:].reshape(h, w), P, colorbar_title=t("step5.attention"), zmin=0,
                            title=t("step5.fig.cls", **where)), key="step5.cls")

    # --- softmax(q·k/√d) for the selected query, in numbers, checked against the model's own weights
    st.subheader(t("step5.softmax.title"))
    st.latex(rf"a_j = \frac{{\exp(s_j)}}{{\sum_{{j'=1}}^{{{T}}} \exp(s_{{j'}})}}, \qquad"
             rf" s_j = \frac{{q \cdot k_j}}{{\sqrt{{{hd}}}}}, \qquad q, k_j \in \mathbb{{R}}^{{{hd}}}")
    qa = analysis.query_attention(lt.q[0, head], lt.k[0, head], query)
    scores, weights = qa["scores"], qa["weights"]
    ui.plot(viz.heatmap(lt.q[0, head, query][None], colorbar_title=t("step5.value"), diverging=True, height=200,
                        title=t("step5.fig.q", hd=hd, label=labels[query]), x_title=t("step5.axis.hd"), y=["q"]),
            key="step5.q")
    bars = dict(labels=labels, x_title=t("step5.axis.key", last=T - 1), prefix=p, mark=query)
    left, right = st.columns(2)
    with left:
        ui.plot(vz.key_bars(scores, y_title=t("step5.axis.score"), hover=t("step5.hover.score"),
                            title=t("step5.fig.scores"), **bars), key="step5.scores")
    with right:
        ui.plot(vz.key_bars(weights, y_title=t("step5.axis.weight"), hover=t("step5.hover.weight"),
                            title=t("step5.fig.weights"), **bars), key="step5.weights")
    top = weights.topk(min(8, T)).indices
    st.dataframe(pd.DataFrame({t("step5.col.key"): [labels[j] for j in top], t("step5.col.score"): scores[top].numpy(),
                               t("step5.col.weight"): weights[top].numpy()}), hide_index=True)
    st.success(t("step5.softmax.check", total=f"{float(weights.sum()):.6f}",
                 diff=f"{float((weights - A[head, query]).abs().max()):.1e}"))

    # --- Q, K, V of this head
    st.subheader(t("step5.qkv.title", T=T, hd=hd, **where))
    ui.plot(vz.qkv_heatmaps({"Q": lt.q[0, head], "K": lt.k[0, head], "V": lt.v[0, head]}, labels, prefix_rows=p,
                            mark_row=query, colorbar_title=t("step5.value"), x_title=t("step5.axis.hd"),
                            hover=t("step5.hover.token")), key="step5.qkv")
    for col, name, m in zip(st.columns(3), "QKV", (lt.q, lt.k, lt.v)):
        with col:
            ui.show_tensor(name, m[0, head])

    # --- every head of the layer at a glance, one colour scale
    st.subheader(t("step5.heads.title", H=H, l=layer + 1))
    maps = A[:, query, p:].reshape(H, h, w)  # (heads, h, w)
    ui.plot(vz.map_grid(maps, [t("step5.heads.panel", h=i + 1) for i in range(H)], colorbar_title=t("step5.attention"),
                        cols=6, mark=(r, c), hover=t("step5.hover.map")), key="step5.heads")
    windows(layer, head, (r, c))


def windows(layer: int, head: int, patch: tuple[int, int]):  # Swin-style windows laid on this layer's attention
    st.subheader(t("step5.windows.title"))
    st.markdown(t("step5.windows.body"))
    k = st.columns(2)
    win = k[0].slider(t("step5.windows.size"), 1, max(h, w), key=ui.setting(f"step5.windows.size.{h}x{w}",
                                                                            max(2, min(h, w) // 2)))
    shift = k[1].toggle(t("step5.windows.shift"), key=ui.setting("step5.windows.shift", False),
                        help=t("step5.windows.shift_help"))
    stats = ex.window_stats(tr.attentions, tr.grid, win, shift, p)
    attention, lost = ex.query_window(tr.attentions, tr.grid, win, shift, layer, head, patch, p)
    probs, own = ui.windowed_probs(lv, win, shift), tr.probs[0]
    left, right = st.columns([3, 2])
    with left:
        ui.clickable_chart(vx.window_figure(lv.display, attention.numpy(), P, win, ex.window_offset(win, shift), patch,
                                            colorbar_title=t("step5.attention"), hover=t("step5.windows.hover"),
                                            title=t("step5.windows.fig.window", r=patch[0], c=patch[1], l=layer + 1,
                                                    h=head + 1)), key="step5.windows.fig", grid=tr.grid)
    with right:
        st.metric(t("step5.windows.metric.lost"), f"{lost:.1%}")
        st.metric(t("step5.windows.metric.windows"), f"{stats.windows}")
        st.metric(t("step5.windows.metric.pairs"), f"{stats.allowed_pairs:,}", t("step5.windows.of_pairs",
                  total=f"{stats.total_pairs:,}", ratio=f"{stats.cost_ratio:.1%}"), delta_color="off", delta_arrow="off")
        for key, pr in (("own", own), ("windowed", probs)):
            st.metric(t(f"step5.windows.whatif.{key}"), names[int(pr.argmax())], f"{float(pr.max()):.1%}",
                      delta_color="off", delta_arrow="off")
    ui.plot(vx.layer_lines({t("step5.windows.series.outside"): stats.outside.mean(1).numpy(),
                            t("step5.windows.series.head", h=head + 1): stats.outside[:, head].numpy(),
                            t("step5.windows.series.prefix"): stats.prefix.mean(1).numpy()},
                           x_title=t("step5.axis.layer"), y_title=t("step5.windows.share"),
                           title=t("step5.windows.fig.layers", w=win)), key="step5.windows.layers")
    st.caption(t("step5.windows.layers.caption"))
    st.info(t("step5.windows.whatif.caption"))


attention()

# --- the residual stream: what attention and the MLP write into it, layer by layer
st.subheader(t("step5.residual.title"))
norms = analysis.token_norms(tr.hidden_states)[:, 0]  # (L+1, T)
added = analysis.sublayer_norms(tr.layers)  # {"attention", "mlp"}: (L, B, T)
left, right = st.columns(2)
with left:
    ui.plot(viz.lines(range(L + 1), {t("step5.series.cls"): norms[:, 0], t("step5.series.patch"): norms[:, p:].mean(-1)},
                      title=t("step5.fig.norms"), x_title=t("step5.axis.layer"), y_title=t("step5.axis.norm"),
                      height=340), key="step5.norms")
with right:
    series, dash = {}, {}
    for part in ("attention", "mlp"):
        for who, tokens in (("cls", slice(0, 1)), ("patch", slice(p, None))):
            name = t(f"step5.series.{part}.{who}")
            series[name] = added[part][:, 0, tokens].mean(-1)  # (L,)
            dash[name] = "dot" if who == "patch" else "solid"
    ui.plot(viz.lines(range(1, L + 1), series, title=t("step5.fig.added"), x_title=t("step5.axis.layer"),
                      y_title=t("step5.axis.norm"), height=380, dash=dash, legend_y=-0.3),
            key="step5.added")
st.caption(t("step5.residual.caption"))
ui.show_tensor(t("step5.tensor.norms"), norms)
