"""CNN vs ViT reach: how far a layer can see (receptive field), how far ViT heads do look (attention
distance), where one output's gradient lands (ERF), and which model wins on how much data.

The CNN and the data-efficiency runs are files other commands make; the state keys "cnn.model"
and "cnn.de_dir" (or the variables VIT_EXPLORER_CNN / VIT_EXPLORER_EXPERIMENTS) point elsewhere.
"""

import os
from pathlib import Path

import numpy as np
import streamlit as st

import ui
from vit_core import analysis, claims
from vit_core.card import Preprocess
from vit_core.images import load_image
from vit_core.cnn import layer_specs
from vit_core.viz.shared import reach as vz

t = ui.t
CNN_ID = os.environ.get("VIT_EXPLORER_CNN", "fmnist-cnn")
DE_DIR = os.environ.get("VIT_EXPLORER_EXPERIMENTS", str(claims.EXPERIMENTS))
VIEW_224 = Preprocess(size=(224, 224), resize="shorter_crop", crop_pct=1.0)  # what ResNet-50 / VGG-16 see
X = r"\times"


# ---------------------------------------------------------------- cached computations (small numpy results)

@st.cache_data(show_spinner=False, max_entries=8)
def sample_distances(model_id: str, names: tuple[str, ...]) -> np.ndarray:
    """Mean attention distance (S, L, heads) over a fixed set of sample images."""
    model, card = ui.load_model(model_id)
    images = [load_image((ui.SAMPLES / name).read_bytes()) for name in names]
    return analysis.sample_attention_distances(model, card.preprocess, images).numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def current_distances(model_id: str, digest: str, _tr) -> np.ndarray:
    """Mean attention distance (L, heads) of the current trace (cached: ~1 s for B/16 on a small CPU)."""
    return analysis.mean_attention_distance(_tr.attentions, _tr.grid, _tr.patch_size,
                                            num_prefix_tokens=_tr.num_prefix_tokens)[0].cpu().numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def vit_erfs(model_id: str, digest: str, _pixels, token: int, layers: tuple[int, ...]) -> np.ndarray:
    """ERF of `token` at each layer in `layers` (1..L), each divided by its max: (len(layers), H, W)."""
    model, _ = ui.load_model(model_id)
    maps = analysis.vit_erfs(model, _pixels, layers, token).cpu()  # one forward, one gradient per layer
    return np.stack([analysis.normalise_peak(m)[0].numpy() for m in maps])


@st.cache_data(show_spinner=False, max_entries=64)
def cnn_erfs(cnn_id: str, digest: str, _image, centre: tuple[float, float]) -> analysis.CnnErfs:
    cnn, card = ui.load_model(cnn_id)
    return analysis.cnn_erf_layers(cnn, layer_specs(card.config), card.preprocess(_image), centre)


def load_cnn():
    """(id, card) of the CNN, or (None, None) after a message (the file is made by the training script)."""
    cnn_id = st.session_state.get("cnn.model", CNN_ID)
    try:
        return cnn_id, ui.load_model(cnn_id)[1]
    except Exception:  # noqa: BLE001 - missing or unreadable: the CNN parts say so, the rest of the page stays
        st.warning(t("cnn.missing_cnn", path=cnn_id))
        return None, None


def load_data_efficiency():
    """The data-efficiency study so far (claims.data_efficiency), or None after a message."""
    folder = Path(st.session_state.get("cnn.de_dir", DE_DIR))
    try:
        de = claims.data_efficiency(folder)
        rows = analysis.compare_data_efficiency(de.summary())
    except Exception:  # noqa: BLE001 - missing, half-written or malformed: a message instead of the section
        st.warning(t("cnn.missing_de", path=folder / "data_efficiency.json"))
        return None
    return de, rows


def join(*sentences: str) -> str:
    return ("" if ui.lang() == "zh" else " ").join(sentences)  # Chinese puts no space between sentences


def model_name(key: str) -> str:
    return t(f"cnn.model.{key}")


# ---------------------------------------------------------------- the page

lv = ui.page("cnn", vit_only=True)
tr = lv.trace
s = tr.shapes
H, W, P, h, w, prefix, L, heads = s.H, s.W, s.P, s.h, s.w, s.prefix, s.L, s.heads
cnn_id, cnn_card = load_cnn()
with st.expander(t("cnn.patch.pick"), expanded=False):
    r, c = ui.patch_picker(tr)
centre = ((r + 0.5) / h, (c + 0.5) / w)  # the selected patch's centre, as a fraction of the image
st.caption(t("cnn.patch.now", r=r, c=c))

# 1 · theoretical receptive field ---------------------------------------------------------------
st.header(t("cnn.rf.header"))
st.markdown(t("cnn.rf.intro"))
st.caption(t("cnn.rf.legend"))
st.expander(t("cnn.rf.more")).markdown(t("cnn.rf.detail"))
view224 = np.asarray(VIEW_224.image(ui.current_image()), dtype=np.float32) / 255.0
nets = {"resnet": ("ResNet-50", analysis.RESNET50_LAYERS, view224, "layer2.3.conv3"),
        "vgg": ("VGG-16", analysis.VGG16_LAYERS, view224, "pool3")}
if cnn_card:
    cnn_view = cnn_card.preprocess.to_display(cnn_card.preprocess(ui.current_image()))
    specs = layer_specs(cnn_card.config)
    nets["cnn"] = (model_name("cnn_ours"), specs, cnn_view, specs[len(specs) // 2][0])
curves, chosen = {}, {}
for col, (key, (name, layers, img, default)) in zip(st.columns(3), nets.items()):
    fields = analysis.receptive_field(layers)
    names = [f.name for f in fields]
    st.session_state.setdefault(f"cnn.rf.{key}", default)
    picked = col.select_slider(t("cnn.rf.layer", net=name), names, key=ui.persist(f"cnn.rf.{key}"))
    k = names.index(picked)
    f, (Hi, Wi) = fields[k], img.shape[:2]
    sy, sx = analysis.rf_span(centre[0] * Hi, f, Hi), analysis.rf_span(centre[1] * Wi, f, Wi)
    patch = ((r / h * Hi, (r + 1) / h * Hi), (c / w * Wi, (c + 1) / w * Wi))
    col.metric(t("cnn.rf.metric", net=name, layer=picked), t("cnn.px", v=f.rf))
    with col:
        ui.plot(vz.rf_on_image(img, sy, sx, patch_box=patch, title=t("cnn.rf.fig", net=name, H=Hi, W=Wi),
                               hover=t("cnn.rf.hover", layer=picked, rf=f.rf)), key=f"cnn.rf.fig.{key}")
    col.caption(t("cnn.rf.caption", jump=f.jump, pct=min(1.0, f.rf / max(Hi, Wi)), side=max(Hi, Wi)))
    curves[name], chosen[name] = (names, [x.rf for x in fields]), k
    prev = fields[k - 1] if k else analysis.RF("input", 1, 1, 0.5)  # the last network's layer gets the formula
    kernel, dilation = layers[k][1], layers[k][3]
    formula = (r"r_l = r_{l-1} + (k_l - 1)\, d_l\, j_{l-1}, \quad j_l = j_{l-1}\, s_l \qquad \text{" + name
               + r"}:\ r = " + f"{prev.rf} + ({kernel} - 1) \\cdot {dilation} \\cdot {prev.jump} = {f.rf}")
if cnn_card is None:
    st.info(t("cnn.rf.no_cnn"))
st.latex(formula)

# 2 · how far ViT heads look, next to the CNNs' fields ------------------------------------------------
cur = current_distances(lv.model_id, lv.digest, tr)  # (L, heads)
kind = "fmnist" if lv.card.config.in_chans == 1 else "photo"
samples = tuple(p.name for p in ui.sample_files() if p.stem.startswith(kind + "_"))
with st.spinner(t("cnn.dist.computing", n=len(samples))):
    avg = sample_distances(lv.model_id, samples).mean(0) if samples else None
ceiling = analysis.uniform_attention_distance(tr.grid, P)
left, right = st.columns(2)
with left:
    st.subheader(t("cnn.rf.depth_header"))
    refs = {t("cnn.rf.ref224", side=VIEW_224.size[0]): VIEW_224.size[0]}
    if cnn_card:
        refs[t("cnn.rf.ref_cnn", side=max(cnn_view.shape[:2]))] = max(cnn_view.shape[:2])
    ui.plot(vz.rf_by_depth(curves, references=refs, selected=chosen, title=t("cnn.rf.depth_title"),
                           x_title=t("cnn.rf.depth_x"), y_title=t("cnn.rf.depth_y"), hover=t("cnn.rf.depth_hover")),
            key="cnn.rf.depth")
    st.caption(t("cnn.rf.depth_caption"))
with right:
    st.subheader(t("cnn.dist.header"))
    labels = {"current": t("cnn.dist.current"), "average": t(f"cnn.dist.set.{kind}", n=len(samples)),
              "mean": t("cnn.dist.mean"), "ceiling": t("cnn.dist.ceiling", d=ceiling), "head": t("app.head"),
              "unit": t("cnn.unit")}
    ui.plot(vz.attention_distance(cur, avg, ceiling, names=labels, title=t("cnn.dist.title"),
                                  x_title=t("cnn.dist.x"), y_title=t("cnn.dist.y", H=H, W=W)), key="cnn.dist")
    st.caption(t("cnn.dist.caption"))
st.latex(r"\bar d_{l,h} = \frac{1}{N} \sum_{q=1}^{N} \sum_{k=1}^{N} a^{l,h}_{qk}\, \lVert p_q - p_k \rVert"
         + rf"\qquad N = {h}{X}{w} = {h * w},\ P = \text{{{t('cnn.px', v=P)}}},\ "
         + rf"\bar d_{{\text{{{t('cnn.dist.uniform')}}}}} = \text{{{t('cnn.px', v=f'{ceiling:.1f}')}}}")
st.markdown(t("cnn.dist.explain"))
d = avg if avg is not None else cur  # the sample average, when there is one, speaks for the model
m0, m1 = float(d[0].mean()), float(d[-1].mean())
trend = "up" if m1 - m0 > 0.05 * ceiling else "down" if m0 - m1 > 0.05 * ceiling else "flat"
measured = t("cnn.dist.measured", set=labels["average"] if avg is not None else labels["current"], L=L,
             a=d[0].min(), b=d[0].max(), pa=d[0].min() / ceiling, pb=d[0].max() / ceiling,
             c=d[-1].min(), e=d[-1].max(), ceiling=ceiling)
st.markdown(join(measured, t(f"cnn.dist.trend.{trend}", m0=m0, m1=m1, L=L)))
ui.show_tensor(t("cnn.dist.tensor"), cur)

# 3 · effective receptive field --------------------------------------------------------------------
st.header(t("cnn.erf.header"))
st.markdown(t("cnn.erf.intro"))
st.expander(t("cnn.erf.more")).markdown(t("cnn.erf.detail"))
st.latex(r"\mathrm{ERF}(x, y) = \sum_{c} \left| \frac{\partial\, \textstyle\sum_{d} z_{d}(\text{pos})}{\partial\, "
         + r"\mathrm{pixel}_{c}(x, y)} \right|" + rf"\qquad H {X} W = {H}{X}{W}")
layer, _ = ui.layer_head_picker(L, heads, key="cnn", with_head=False)
# like with like: the CNN's gradient is only put beside a ViT that reads the same input
comparable = bool(cnn_card) and (lv.card.config.in_chans, tuple(lv.card.config.image_size)) == (
    cnn_card.config["in_chans"], tuple(cnn_card.config["image_size"]))
vit_layers = tuple(range(1, L + 1)) if comparable else (layer + 1,)
with st.spinner(t("cnn.erf.computing")):
    vmaps = vit_erfs(lv.model_id, lv.digest, tr.pixels, prefix + r * w + c, vit_layers)
vit_map = vmaps[vit_layers.index(layer + 1)]
vit_frac = analysis.erf_fraction(vmaps).numpy()
patch_vit = ((r * P, (r + 1) * P), (c * P, (c + 1) * P))
hover = t("cnn.erf.hover")
reached = analysis.ERF_THRESHOLD  # the share of the peak gradient that counts as reached
erf_cols = st.columns(2)
with erf_cols[0]:
    ui.plot(vz.erf_map(lv.display, vit_map, patch_box=patch_vit, hover=hover, colorbar_title=t("cnn.erf.cbar"),
                       title=t("cnn.erf.vit_title", layer=layer + 1, token=prefix + r * w + c)), key="cnn.erf.vit")
    st.metric(t("cnn.erf.fraction", model=model_name("vit"), threshold=reached),
              f"{vit_frac[vit_layers.index(layer + 1)]:.1%}")
if comparable:
    with st.spinner(t("cnn.erf.computing")):
        ce = cnn_erfs(cnn_id, lv.digest, ui.current_image(), centre)
    cnames, cmaps, cells, boxes = ce.names, ce.maps.numpy(), ce.cells, ce.boxes
    k = min(len(cnames), max(1, round((layer + 1) * len(cnames) / L))) - 1  # the CNN layer at the same depth
    cnn_frac = analysis.erf_fraction(cmaps).numpy()
    with erf_cols[1]:
        title = t("cnn.erf.cnn_title", layer=cnames[k], i=cells[k][0], j=cells[k][1])
        ui.plot(vz.erf_map(cnn_view, cmaps[k], patch_box=patch_vit, rf_box=boxes[k], hover=hover,
                           colorbar_title=t("cnn.erf.cbar"), title=title), key="cnn.erf.cnn")
        st.metric(t("cnn.erf.fraction", model=model_name("cnn_ours"), threshold=reached), f"{cnn_frac[k]:.1%}")
    st.caption(t("cnn.erf.pairing", layer=layer + 1, cnn_layer=cnames[k], k=k + 1, n=len(cnames)))
    series = {model_name("vit"): 100 * vit_frac, model_name("cnn_ours"): 100 * cnn_frac}
    ui.plot(vz.erf_by_depth(series, selected={model_name("vit"): layer, model_name("cnn_ours"): k},
                            title=t("cnn.erf.depth_title", threshold=reached), x_title=t("cnn.erf.depth_x"),
                            y_title=t("cnn.erf.depth_y"), hover=t("cnn.erf.depth_hover")), key="cnn.erf.depth")
    st.markdown(t("cnn.erf.measured", layer=layer + 1, vit=vit_frac[layer], cnn_layer=cnames[k], cnn=cnn_frac[k],
                  vit0=vit_frac[0], cnn0=cnn_frac[0], last=cnames[-1], vitL=vit_frac[-1], cnnL=cnn_frac[-1], L=L))
else:
    erf_cols[1].info(t("cnn.erf.other_model" if cnn_card else "cnn.erf.no_cnn"))
ui.show_tensor(t("cnn.erf.tensor"), vit_map)

# 4 · data efficiency ------------------------------------------------------------------------------
st.header(t("cnn.de.header"))
st.markdown(t("cnn.de.claim"))
loaded = load_data_efficiency()
if loaded:
    de, rows = loaded
    legend = {"vit": model_name("vit"), "cnn": model_name("cnn"), "seed": t("cnn.de.hover.seed"),
              "mean": t("cnn.de.hover.mean")}
    ui.plot(vz.data_efficiency(de.runs, de.summary(), names=legend, title=t("cnn.de.title"),
                               x_title=t("cnn.de.x"), y_title=t("cnn.de.y")), key="cnn.de.fig")
    g = de.gaps
    ui.plot(vz.gap_by_size([x.size for x in g], [100 * x.mean for x in g], [100 * x.lo for x in g],
                           [100 * x.hi for x in g], title=t("cnn.de.gap_title"), x_title=t("cnn.de.x"),
                           y_title=t("cnn.de.gap_y"), hover=t("cnn.de.hover.gap")), key="cnn.de.gap")
    cell = lambda m, n: t("cnn.de.col.range", mean=de.cells[m][n].mean, lo=de.cells[m][n].lo, hi=de.cells[m][n].hi)  # noqa: E731
    st.dataframe({t("cnn.de.col.size"): [f"{r['size']:,}" for r in rows],
                  model_name("vit"): [cell("vit", r["size"]) for r in rows],
                  model_name("cnn"): [cell("cnn", r["size"]) for r in rows],
                  t("cnn.de.col.diff"): [f"{-100 * r['diff']:+.2f}" for r in rows],
                  t("cnn.de.col.seeds"): [r["seeds"] for r in rows],
                  t("cnn.de.col.cpu"): [f"{de.cpu_minutes('vit', r['size']):.0f} / {de.cpu_minutes('cnn', r['size']):.0f}"
                                        for r in rows]}, hide_index=True)
    st.subheader(t("cnn.de.ours"))
    said = claims.de_verdict(rows, ui.lang())
    st.markdown("\n".join("- " + s for s in said))
    st.subheader(t("cnn.de.rules"))
    st.markdown("\n".join("- " + s for s in claims.de_rules(de, ui.lang())))
    checks = claims.budget_checks(de)
    if checks:
        st.caption(t("cnn.de.check.title"))
        st.dataframe({t("cnn.de.check.model"): [model_name(c["model"]) for c in checks],
                      t("cnn.de.col.size"): [f"{c['size']:,}" for c in checks],
                      **{t("cnn.de.check.scale", scale=k): [f"{c['val'][k]:.2%}" if k in c["val"] else "—" for c in checks]
                         for k in claims.SCALES if any(k in c["val"] for c in checks)},
                      t("cnn.de.check.chosen"): [t("cnn.de.check.scale", scale=c["chosen"]) if c["chosen"]
                                                 else t("cnn.de.check.pending") for c in checks]}, hide_index=True)
    st.code("python -m vit_core.studies run --threads 1   # twice, for two cores; resumable", language="bash")
st.info(t("cnn.de.caveat"))

# 5 · takeaways ------------------------------------------------------------------------------------
st.header(t("cnn.take.header"))
takeaways = [t("cnn.take.local", b=d[0].max(), pb=d[0].max() / ceiling), t("cnn.take.bias"), t("cnn.take.data")]
if comparable:
    takeaways.append(t("cnn.take.erf", vit=vit_frac[0], cnn=cnn_frac[0], cnn_layer=cnames[0]))
if loaded:
    takeaways.append(join(t("cnn.take.measured"), said[0]))
st.markdown("\n".join("- " + s for s in takeaways))
