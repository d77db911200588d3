"""Overview: the whole pipeline at a glance, with the real shapes of the selected model and image."""

import streamlit as st

import ui
from vit_core import analysis
from vit_core.viz.shared import common as viz

t = ui.t
lv = ui.page("home")
tr = lv.trace
s = tr.shapes
PPC = s.P * s.P * s.C  # the numbers in one flattened patch


def brace(shape: str, key: str) -> str:
    return rf"\underbrace{{{shape}}}_{{\text{{{t(key)}}}}}"


x = r"\times"
st.latex(r" \to ".join([brace(f"{s.H}{x}{s.W}{x}{s.C}", "home.f.image"), brace(f"{s.N}{x}{PPC}", "home.f.patches"),
                        brace(f"{s.T}{x}{s.D}", "home.f.tokens")])
         + rf" \xrightarrow{{{s.L}{x}\text{{{t('home.f.block')}}}}} "
         + r" \to ".join([brace(f"{s.T}{x}{s.D}", "home.f.encoder"), brace(str(s.D), "home.f.cls"),
                          brace(str(tr.logits.shape[-1]), "home.f.classes")]))

names = lv.class_names()
ov = analysis.overview(tr)  # one readout per card: the top classes, CLS's last-layer look, E_pos of the centre
(best, p_best), centre = ov.top[0], ov.centre

cards = [
    ("pages/step1_patchify.py", viz.image_grid(lv.display, tr.grid, s.P)),
    ("pages/step2_project.py", viz.heatmap(tr.patches[0], colorbar_title=t("home.values"), diverging=True,
                                           x_title=t("home.axis.ppc"), y_title=t("home.axis.patch"), max_side=128)),
    ("pages/step3_position.py", viz.heatmap(ov.similarity, colorbar_title=t("home.cosine"), zmin=-1, zmax=1,
                                            diverging=True, square=True, marks=[centre])),
    ("pages/step4_cls.py", viz.heatmap(tr.tokens[0], colorbar_title=t("home.values"), diverging=True,
                                       x_title=t("home.axis.dim"), y_title=t("home.axis.token"), max_side=128)),
    ("pages/step5_encoder.py", viz.overlay(lv.display, ov.cls_attention, s.P, colorbar_title=t("home.attention"))),
    ("pages/step6_classify.py", viz.bars([names[i] for i, _ in ov.top], [v for _, v in ov.top], highlight=0)),
]
for row in range(2):
    for col, (page, fig) in zip(st.columns(3), cards[3 * row: 3 * row + 3]):
        step = page.split("/")[1].split("_")[0]  # "step1"
        with col.container(border=True):
            st.markdown(f"**{t(f'home.{step}.title')}**")
            st.caption(t(f"home.{step}.shape", **s._asdict(), PPC=PPC, top=names[best], p=p_best))
            ui.plot(viz.style(fig, height=260), key=f"home.{step}")
            st.page_link(page, label=t("home.open"), icon="➡️")

st.info(t("home.hint"))
