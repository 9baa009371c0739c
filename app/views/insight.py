"""Noise insight: does the model fit the flipped labels? f_y of clean vs flipped samples, the
memorisation over epochs, the flipped images themselves (a sortable gallery, filtered by a click
on a histogram bar), for truncated Lq how well pruning finds the noisy samples, and for
forward correction with an estimated matrix the estimate beside the true one."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, ui, url_state
from gce_core.loss_zoo import true_transition
from gce_core.metrics import HIST_BINS

P = "insight_"
URL_KEYS = ("run", "epoch")
GALLERY_ORDERS = {
    "f_y now, highest first (memorised first)": ("f_y", False),
    "f_y now, lowest first": ("f_y", True),
    "most memorised since the start (f_y rise)": ("rise", False),
    "given label": ("given", True),
    "true label": ("true", True),
}


@st.cache_data(show_spinner="Loading the run's flipped images...", max_entries=8)
def load_gallery(spec_json: str) -> dict:
    """The run's gallery samples (the data set is read in this process, once per spec)."""
    from gce_core.experiment_data import gallery_samples

    g = gallery_samples(spec_json)
    return {"images": [thumbnail(x) for x in g.images.numpy()], "given": g.given.tolist(), "true": g.true.tolist(),
            "class_names": list(g.class_names)}


def thumbnail(image: np.ndarray) -> str:
    """A (C, H, W) image in [0, 1] as a PNG data URI, nearest-upscaled to at least 56 px."""
    from PIL import Image

    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    im = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    scale = max(1, -(-56 // max(im.size)))
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def gallery_frame(rows: list[dict], gallery: dict, epoch: int) -> pd.DataFrame:
    """One row per gallery sample at ``epoch``: image, given and true label, f_y now and over the
    epochs, predicted class, memorised (predicted as the wrong given label), kept (truncated Lq)."""
    upto = [r for r in rows if r["epoch"] <= epoch and r.get("fy_gallery")]
    now = upto[-1]
    names = gallery["class_names"]
    fy = np.array([r["fy_gallery"] for r in upto])  # (epochs, K)
    frame = pd.DataFrame({
        "image": gallery["images"],
        "given": [names[i] for i in gallery["given"]],
        "true": [names[i] if i >= 0 else "(open set)" for i in gallery["true"]],
        "f_y": fy[-1],
        "f_y over epochs": [list(col) for col in fy.T],
        "rise": fy[-1] - fy[0],
        "predicted": [names[i] for i in now["pred_gallery"]],
        "memorised": [p == g for p, g in zip(now["pred_gallery"], gallery["given"], strict=True)],
    })
    if now.get("kept_gallery") is not None:
        frame["kept"] = now["kept_gallery"]
    return frame


def gallery(record, rows: list[dict], epoch: int, selected_bin: float | None) -> None:
    st.subheader("The flipped images")
    if not any(r.get("fy_gallery") for r in rows):
        st.info("This run records no gallery: it has no flipped training sample, or it was trained before the "
                "lab recorded one. Launch it again to see the images it was given wrong labels for.")
        return
    try:
        samples = load_gallery(record.spec.to_json())
    except (OSError, ValueError) as exc:  # the data set is gone from the data folder, or unusable
        st.warning(f"The images of this run cannot be shown: {exc}")
        return
    frame = gallery_frame(rows, samples, epoch)
    order = st.selectbox("Order", list(GALLERY_ORDERS), key=P + "order")
    column, ascending = GALLERY_ORDERS[order]
    frame = frame.sort_values(column, ascending=ascending, kind="stable")
    if selected_bin is not None:
        half = 0.5 / HIST_BINS
        frame = frame[(frame["f_y"] >= selected_bin - half) & (frame["f_y"] <= selected_bin + half)]
        st.caption(f"Showing the samples with f_y in [{selected_bin - half:.2f}, {selected_bin + half:.2f}] "
                   "(the clicked bar); click the bar again, or elsewhere, to show all.")
    st.dataframe(
        frame.drop(columns=["rise"]), key=P + "gallery", hide_index=True, row_height=60, width="stretch",
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "f_y": st.column_config.ProgressColumn("f_y now", min_value=0.0, max_value=1.0, format="%.2f"),
            "f_y over epochs": st.column_config.LineChartColumn("f_y over epochs", y_min=0.0, y_max=1.0),
            "memorised": st.column_config.CheckboxColumn("memorised", help="predicted as its WRONG given label"),
            "kept": st.column_config.CheckboxColumn("kept", help="truncated Lq: kept by the last w-step (else pruned)"),
        },
    )
    memorised = int(frame["memorised"].sum())
    st.caption(f"{len(frame)} of the run's flipped training samples (up to 48, drawn once per run), at epoch {epoch}: "
               f"{memorised} memorised (the model predicts the wrong label it was given). Click a column header to sort.")


def seed_from_url(records) -> None:
    params = ui.page_params("insight", URL_KEYS)
    ids = [r.id for r in records]
    noisy = [r.id for r in records if r.spec.noise not in ("none", "open_set")]
    default = (noisy or ids or [None])[0]
    ui.seed({P + "run": url_state.get_str(params, "run", default, ids) if ids else None}, force=True)
    st.session_state[P + "epoch_from_url"] = url_state.get_int(params, "epoch", None, 1)


def histogram(rows: list[dict]) -> tuple[int, float | None]:
    last = rows[-1]["epoch"]
    wanted = st.session_state.pop(P + "epoch_from_url", None)
    if wanted is not None and 1 <= wanted <= last:
        st.session_state[P + "epoch"] = wanted
    if st.session_state.get(P + "epoch", last) > last:
        st.session_state[P + "epoch"] = last
    epoch = st.slider("Epoch", 1, max(last, 2), value=last, key=P + "epoch", disabled=last < 2) if last > 1 else 1
    row = next((r for r in rows if r["epoch"] == epoch), rows[-1])
    clean, noisy = row.get("fy_hist_clean") or [], row.get("fy_hist_noisy") or []
    event = st.plotly_chart(charts.fy_histograms(clean, noisy, row["epoch"]), key=P + "hist", config=charts.png_config("fy-histogram"),
                            on_select="rerun", selection_mode="points")
    st.caption(
        "f_y is the probability the model gives to the label it was trained on. Clean samples "
        "should drift right. If flipped samples drift right too, the model is memorising the wrong "
        "labels; a robust loss keeps them on the left. Click a bar to see its flipped images below."
    )
    return epoch, selected_bin(event)


def selected_bin(event) -> float | None:
    """The f_y bin centre of the clicked histogram bar, or None."""
    points = (getattr(event, "selection", None) or {}).get("points") or [] if event else []
    return float(points[0]["x"]) if points and "x" in points[0] else None


client = ui.client()
st.title("Noise insight")
records = [r for r in client.list_runs(limit=200) if r.epochs_done > 0]
if ui.entered() or P + "run" not in st.session_state:
    seed_from_url(records)
if not records:
    ui.empty_state("No run has finished an epoch yet. The quick demo trains three runs on 40% noisy labels.", "views/launch.py", "Go to Launch")
    ui.write_url("insight", {})
    st.stop()

run_id = ui.pick_run("Run", P + "run", records)
record = next(r for r in records if r.id == run_id)
rows = client.metrics(run_id)
epoch = None
if record.spec.noise in ("none", "open_set") or not rows:
    st.info(
        "This run has no flipped labels (clean, or open-set noise which swaps images and keeps labels), "
        "so there is no clean-vs-flipped picture. Pick a run with uniform, class-dependent, instance or human noise."
    )
else:
    epoch, clicked = histogram(rows)
    gallery(record, rows, epoch, clicked)
    frame = pd.DataFrame(rows)
    st.plotly_chart(
        charts.lines_figure(frame, ["memorised", "flipped_to_true", "train_acc_clean"], title="Memorisation over training", y_title="share (%)", revision="insight-mem"),
        key=P + "mem", config=charts.png_config("memorisation"),
    )
    st.caption("memorised: flipped samples predicted as their WRONG label; flipped_to_true: predicted as their true label despite the wrong one.")
    st.subheader("Pruning (truncated Lq)")
    if frame["kept"].isna().all():  # only a loss that prunes reports how many samples it keeps
        st.info("Only truncated-Lq runs prune samples. Launch one with the loss 'truncated Lq' to see how many pruned samples were really noisy.")
    elif frame["prune_precision"].notna().any():
        st.plotly_chart(
            charts.lines_figure(frame, ["prune_precision", "prune_recall"], title="Are pruned samples the noisy ones?", y_title="share (%)", revision="insight-prune"),
            key=P + "prune", config=charts.png_config("pruning"),
        )
        last = frame.dropna(subset=["kept"]).iloc[-1]
        st.caption(f"Epoch {int(last['epoch'])}: {int(last['kept'])} training samples kept. Precision: share of pruned samples that were really flipped; recall: share of flipped samples that were pruned.")
    else:
        st.info(f"No w-step yet: pruning starts at epoch {record.spec.prune_start} (every {record.spec.prune_every} epochs after).")

estimate = next((r for r in rows if r.get("transition_estimate")), None)
if estimate is not None:
    st.subheader("Noise transition matrix: estimated and true")
    left, right = st.columns(2)
    left.plotly_chart(charts.noise_heatmap(estimate["transition_estimate"], title=f"Estimated before epoch {estimate['epoch']}"),
                      key=P + "t_est", config=charts.png_config("transition-estimated"))
    right.plotly_chart(charts.noise_heatmap(true_transition(record.spec).tolist(), title="True: the noise's own"),
                       key=P + "t_true", config=charts.png_config("transition-true"))
    st.caption(
        "forward_est trains with CCE first, then takes, for each class i, the training image whose "
        "p(i | x) is the highest below the 97th percentile, and uses the model's output on it as row i "
        "(Patrini et al. 2017). Row = true label, column = noisy label; the closer the left to the "
        "right, the better the correction."
    )

ui.write_url("insight", {"run": run_id, "epoch": None if epoch in (None, rows[-1]["epoch"] if rows else None) else str(epoch)})
