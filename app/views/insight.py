"""Noise insight: does the model fit the flipped labels? f_y of clean vs flipped samples, the
memorisation over epochs, for truncated Lq how well pruning finds the noisy samples, and for
forward correction with an estimated matrix the estimate beside the true one."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, ui, url_state
from gce_core.loss_zoo import true_transition

P = "insight_"
URL_KEYS = ("run", "epoch")


def seed_from_url(records) -> None:
    params = ui.page_params("insight", URL_KEYS)
    ids = [r.id for r in records]
    noisy = [r.id for r in records if r.spec.noise not in ("none", "open_set")]
    default = (noisy or ids or [None])[0]
    ui.seed({P + "run": url_state.get_str(params, "run", default, ids) if ids else None}, force=True)
    st.session_state[P + "epoch_from_url"] = url_state.get_int(params, "epoch", None, 1)


def histogram(rows: list[dict]) -> int:
    last = rows[-1]["epoch"]
    wanted = st.session_state.pop(P + "epoch_from_url", None)
    if wanted is not None and 1 <= wanted <= last:
        st.session_state[P + "epoch"] = wanted
    if st.session_state.get(P + "epoch", last) > last:
        st.session_state[P + "epoch"] = last
    epoch = st.slider("Epoch", 1, max(last, 2), value=last, key=P + "epoch", disabled=last < 2) if last > 1 else 1
    row = next((r for r in rows if r["epoch"] == epoch), rows[-1])
    clean, noisy = row.get("fy_hist_clean") or [], row.get("fy_hist_noisy") or []
    st.plotly_chart(charts.fy_histograms(clean, noisy, row["epoch"]), key=P + "hist", config=charts.png_config("fy-histogram"))
    st.caption(
        "f_y is the probability the model gives to the label it was trained on. Clean samples "
        "should drift right. If flipped samples drift right too, the model is memorising the wrong "
        "labels; a robust loss keeps them on the left."
    )
    return epoch


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
        "so there is no clean-vs-flipped picture. Pick a run with uniform or class-dependent noise."
    )
else:
    epoch = histogram(rows)
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
