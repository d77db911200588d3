"""Overview: the whole pipeline at a glance, with the real shapes of the selected model and image."""

import streamlit as st

import ui
from vit_core import analysis, viz

t = ui.t
ui.page_header("home")
lv = ui.live()
tr = lv.trace
_, C, H, W = tr.pixels.shape
P, (h, w), prefix = tr.patch_size, tr.grid, tr.num_prefix_tokens
N, D, L = h * w, tr.tokens.shape[-1], len(tr.layers)
heads, T = tr.attentions[0].shape[1], N + prefix
shapes = dict(H=H, W=W, C=C, P=P, h=h, w=w, N=N, D=D, L=L, heads=heads, T=T, PPC=P * P * C, prefix=prefix)


def brace(shape: str, key: str) -> str:
    return rf"\underbrace{{{shape}}}_{{\text{{{t(key)}}}}}"


x = r"\times"
st.latex(r" \to ".join([brace(f"{H}{x}{W}{x}{C}", "home.f.image"), brace(f"{N}{x}{P * P * C}", "home.f.patches"),
                        brace(f"{T}{x}{D}", "home.f.tokens")])
         + rf" \xrightarrow{{{L}{x}\text{{{t('home.f.block')}}}}} "
         + r" \to ".join([brace(f"{T}{x}{D}", "home.f.encoder"), brace(str(D), "home.f.cls"),
                          brace(str(tr.logits.shape[-1]), "home.f.classes")]))

probs = tr.probs[0]
top = probs.topk(min(5, probs.numel()))
names = lv.class_names()
cls_attention = tr.attentions[-1][0, :, 0, prefix:].mean(0).reshape(h, w)
centre = (h // 2, w // 2)
similarity = analysis.pos_embed_similarity(tr.pos_embed, tr.grid, prefix)[centre]

cards = [
    ("pages/step1_patchify.py", viz.image_grid(lv.display, tr.grid, P)),
    ("pages/step2_project.py", viz.heatmap(tr.patches[0], colorbar_title=t("home.values"), diverging=True,
                                           x_title=t("home.axis.ppc"), y_title=t("home.axis.patch"))),
    ("pages/step3_position.py", viz.heatmap(similarity, colorbar_title=t("home.cosine"), zmin=-1, zmax=1,
                                            diverging=True, square=True, marks=[centre])),
    ("pages/step4_cls.py", viz.heatmap(tr.tokens[0], colorbar_title=t("home.values"), diverging=True,
                                       x_title=t("home.axis.dim"), y_title=t("home.axis.token"))),
    ("pages/step5_encoder.py", viz.overlay(lv.display, cls_attention, P, colorbar_title=t("home.attention"))),
    ("pages/step6_classify.py", viz.bars([names[i] for i in top.indices], top.values, highlight=0)),
]
for row in range(2):
    for col, (page, fig) in zip(st.columns(3), cards[3 * row: 3 * row + 3]):
        step = page.split("/")[1].split("_")[0]  # "step1"
        with col.container(border=True):
            st.markdown(f"**{t(f'home.{step}.title')}**")
            st.caption(t(f"home.{step}.shape", **shapes, top=names[top.indices[0]], p=float(top.values[0])))
            ui.plot(viz.style(fig, height=260), key=f"home.{step}")
            st.page_link(page, label=t("home.open"), icon="➡️")

st.info(t("home.hint"))
