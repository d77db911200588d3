"""CNN vs ViT reach: how far a layer can see (receptive field), how far ViT heads do look (attention
distance), where one output's gradient lands (ERF), and which model wins on how much data.

The CNN and the data-efficiency runs are files another command makes; the state keys "cnn.model"
and "cnn.de_json" (or the variables VIT_EXPLORER_CNN / VIT_EXPLORER_DATA_EFFICIENCY) point elsewhere.
"""

import json
import os

import numpy as np
import streamlit as st

import ui
from vit_core import analysis, zoo
from vit_core.card import Preprocess
from vit_core.images import load_image
from vit_core.cnn import layer_specs
from vit_core.viz import reach as vz

t = ui.t
CNN_ID = os.environ.get("VIT_EXPLORER_CNN", "fmnist-cnn")
DE_JSON = os.environ.get("VIT_EXPLORER_DATA_EFFICIENCY", str(ui.ROOT / "assets" / "data_efficiency.json"))
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
    path = st.session_state.get("cnn.de_json", DE_JSON)
    try:
        de = json.loads(open(path, encoding="utf-8").read())
        if not de.get("summary"):
            from vit_core.train import summarize
            de["summary"] = summarize(de["runs"])
        rows = analysis.compare_data_efficiency(de["summary"])
    except Exception:  # noqa: BLE001 - missing, half-written or malformed: a message instead of the section
        st.warning(t("cnn.missing_de", path=path))
        return None
    if not rows:
        st.warning(t("cnn.de.no_pairs", path=path))
        return None
    return de, rows


# ---------------------------------------------------------------- sentences built from the numbers

def join(*sentences: str) -> str:
    return ("" if ui.lang() == "zh" else " ").join(sentences)  # Chinese puts no space between sentences


def model_name(key: str) -> str:
    return t(f"cnn.model.{key}")


def verdict(rows: list[dict]) -> list[str]:
    """What our data-efficiency runs show, as sentences: the pattern, each size, the gap, the claim."""
    leaders = [r["leader"] for r in rows]
    switch = [i for i in range(1, len(rows)) if leaders[i] != leaders[i - 1]]
    if all(x == leaders[0] for x in leaders) and leaders[0]:
        out = [t("cnn.de.pattern.all", model=model_name(leaders[0]), n=len(rows))]
    elif len(switch) == 1 and None not in leaders:
        i = switch[0]
        out = [t("cnn.de.pattern.cross", first=model_name(leaders[0]), last=model_name(leaders[i]),
                 n1=rows[i - 1]["size"], n2=rows[i]["size"])]
    else:
        out = [t("cnn.de.pattern.mixed")]
    notes = [t("cnn.de.seeds." + ("one" if r["seeds"] == 1 else "clear" if r["clear"] else "overlap"), n=r["seeds"])
             for r in rows]
    shared = len(set(notes)) == 1  # the same note on every row is said once, after the pattern
    if shared:
        out[0] = join(out[0], notes[0])
    for r, note in zip(rows, notes):
        if r["leader"] is None:
            out.append(t("cnn.de.row_tie", size=r["size"], acc=r["a"]))
            continue
        ahead, behind = (r["a"], r["b"]) if r["leader"] == "vit" else (r["b"], r["a"])
        out.append(join(t("cnn.de.row", size=r["size"], model=model_name(r["leader"]), pts=100 * abs(r["diff"]),
                     ahead=ahead, behind=behind), "" if shared else note))
    if len(rows) > 1:
        g0, g1 = -100 * rows[0]["diff"], -100 * rows[-1]["diff"]  # CNN minus ViT, in points
        out.append(t("cnn.de.gap", g0=g0, g1=g1, n0=rows[0]["size"], n1=rows[-1]["size"]))
        small = "yes" if rows[0]["leader"] == "cnn" else "no"
        trend = "to_vit" if g1 < g0 - 0.1 else "to_cnn" if g1 > g0 + 0.1 else "flat"  # the claim expects "to_vit"
        out.append(join(t(f"cnn.de.support.{small}", n=rows[0]["size"]), t(f"cnn.de.trend.{trend}")))
    return out


def fully_trained(de: dict, rows: list[dict]) -> str | None:
    """The embedded ViT (the same architecture) trained to the end, from its card, beside what the budget reached."""
    try:
        card = json.loads(zoo.embedded_path("fmnist-vit").with_suffix(".json").read_text(encoding="utf-8"))["extra"]
        vit = [r["a"] for r in rows]
        return t("cnn.de.fully_trained", acc=card["test_accuracy"], steps=card["steps"], epochs=card["epochs"],
                 train=card["train_size"], budget=de["rules"]["steps"], lo=min(vit), hi=max(vit))
    except (OSError, KeyError, ValueError, TypeError):  # no card, or one without these facts: say nothing
        return None


def rules(de: dict) -> list[str]:
    r, runs = de.get("rules", {}), de.get("runs", [])
    out = []
    if "steps" in r:
        passes = [x["passes_over_data"] for x in runs if "passes_over_data" in x] or [0]
        out.append(t("cnn.de.rule.budget", steps=r["steps"], batch=r.get("batch_size", "?"),
                     pmin=min(passes), pmax=max(passes)))
    if "lr" in r:
        out.append(t("cnn.de.rule.optim", lr=r["lr"], wd=r.get("weight_decay", 0), warmup=r.get("warmup_frac", 0),
                     ls=r.get("label_smoothing", 0)))
    if "crop_pad" in r:
        out.append(t("cnn.de.rule.augment." + ("flip" if r.get("hflip") else "noflip"), pad=r["crop_pad"]))
    for key in ("subsets", "evaluation"):
        if key in r:
            out.append(t(f"cnn.de.rule.{key}"))
    params = de.get("parameters", {})
    if {"vit", "cnn"} <= params.keys():
        out.append(t("cnn.de.rule.params", vit=params["vit"], cnn=params["cnn"]))
    seeds = sorted({x["seed"] for x in runs})
    out.append(t("cnn.de.rule.seeds", seeds=", ".join(map(str, seeds)), n=len(runs)))
    return out


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
    ui.plot(vz.data_efficiency(de["runs"], de["summary"], names=legend, title=t("cnn.de.title"),
                               x_title=t("cnn.de.x"), y_title=t("cnn.de.y")), key="cnn.de.fig")
    st.dataframe({t("cnn.de.col.size"): [f"{r['size']:,}" for r in rows],
                  model_name("vit"): [f"{r['a']:.2%}" for r in rows],
                  model_name("cnn"): [f"{r['b']:.2%}" for r in rows],
                  t("cnn.de.col.diff"): [f"{-100 * r['diff']:+.2f}" for r in rows],
                  t("cnn.de.col.seeds"): [r["seeds"] for r in rows]}, hide_index=True)
    st.subheader(t("cnn.de.ours", steps=de.get("rules", {}).get("steps", "?")))
    said = verdict(rows) + [s for s in [fully_trained(de, rows)] if s]
    st.markdown("\n".join("- " + s for s in said))
    st.subheader(t("cnn.de.rules"))
    st.markdown("\n".join("- " + s for s in rules(de)))
    if de.get("command"):
        st.code(de["command"], language="bash")
st.info(t("cnn.de.caveat"))

# 5 · takeaways ------------------------------------------------------------------------------------
st.header(t("cnn.take.header"))
takeaways = [t("cnn.take.local", b=d[0].max(), pb=d[0].max() / ceiling), t("cnn.take.bias"), t("cnn.take.data")]
if comparable:
    takeaways.append(t("cnn.take.erf", vit=vit_frac[0], cnn=cnn_frac[0], cnn_layer=cnames[0]))
if loaded:
    takeaways.append(join(t("cnn.take.measured"), said[0]))
st.markdown("\n".join("- " + s for s in takeaways))
