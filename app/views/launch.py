"""Launch: pick data, noise and losses; see the noise matrix and a time estimate; queue the runs."""

from __future__ import annotations

from collections import Counter

import streamlit as st

from app import charts, ui, url_state
from app import launch_form as lf
from gce_core.data import DATASETS
from gce_core.models import MODEL_NAMES
from gce_core.noise import CLASS_MAP_NAMES, NOISE_KINDS
from jobs.client import SubmitRefused
from jobs.status import RunStatus

P = "launch_"  # widget key prefix
URL_KEYS = (*url_state.LAUNCH_PARAMS, "preset")
DEFAULT_MAP = "(data set default)"


def form_values(choices: lf.LaunchChoices) -> dict:
    """Widget key -> value for the form."""
    values = {P + k: v for k, v in choices.to_dict().items() if k != "extra"}
    values[P + "losses"] = list(choices.losses)
    values[P + "lr_milestones"] = ", ".join(map(str, choices.lr_milestones))
    values[P + "train_subset"] = choices.train_subset or 0
    values[P + "class_map"] = choices.class_map or DEFAULT_MAP
    return values


def read_form(preset: str) -> tuple[lf.LaunchChoices, list[tuple[str, str]]]:
    """The form's submitted values (hidden advanced fields keep the preset's)."""
    base = lf.choices_from_preset(preset)
    s = st.session_state
    values = {}
    for name in base.to_dict():
        if name != "extra" and P + name in s:
            values[name] = s[P + name]
    problems = []
    if "lr_milestones" in values:
        values["lr_milestones"], msg = lf.parse_milestones(values["lr_milestones"])
        if msg:
            problems.append(("lr_milestones", msg))
    values["train_subset"] = values.get("train_subset") or None
    if values.get("class_map") == DEFAULT_MAP:
        values["class_map"] = None
    return lf.with_values(base, **values), problems


def apply_preset() -> None:
    ui.seed(form_values(lf.choices_from_preset(st.session_state[P + "preset"])), force=True)


def session_active(client, ids: list[int]) -> int:
    active = 0
    for run_id in ids:
        try:
            active += not RunStatus(client.get(run_id).status).is_final
        except KeyError:
            continue
    return active


def where_runs_go(info: dict) -> None:
    counts = Counter(map(str, info.get("devices") or []))
    devices = ", ".join(f"{n} × {d}" if n > 1 else d for d, n in counts.items()) or "no device yet"
    st.caption(
        f"Runs go to the **{info.get('executor', '?')}** executor: {info.get('slots', '?')} slot(s) "
        f"on {devices}; {info.get('workers_alive', 0)} worker(s) alive."
    )
    if not info.get("workers_alive"):
        st.warning(
            "No worker is running, so launched runs wait in the queue. `python -m app` (or "
            "`make run`) starts one with the lab; `python -m jobs worker` starts one alone."
        )


def form(teach: bool, data_root: str) -> tuple[bool, bool]:
    with st.form("launch_form", border=True):
        c1, c2 = st.columns(2)
        c1.selectbox("Data set", list(DATASETS), key=P + "dataset", format_func=lambda d: lf.DATASET_LABELS[d])
        c2.selectbox("Model", list(MODEL_NAMES), key=P + "model")
        c1.number_input("Epochs", min_value=1, max_value=5000, step=1, key=P + "epochs")
        c2.number_input("Seeds per loss", min_value=1, max_value=10, step=1, key=P + "seeds", help="Runs per loss, for mean ± std over seeds.")
        c1.selectbox("Label noise", list(NOISE_KINDS), key=P + "noise", format_func=lambda n: lf.NOISE_LABELS[n])
        c2.slider("Noise rate η", 0.0, 0.95, step=0.05, key=P + "noise_rate", help="Share of training labels selected for corruption.")
        st.pills("Losses to compare", list(lf.FORM_LOSSES), selection_mode="multi", key=P + "losses", format_func=lambda x: lf.LOSS_LABELS[x])
        c1, c2 = st.columns(2)
        c1.slider("q (Lq, truncated Lq)", 0.05, 1.0, step=0.05, key=P + "q", help="q → 0 is CCE, q = 1 is MAE/2. The paper uses 0.7.")
        c2.slider("k (truncated Lq threshold)", 0.05, 0.95, step=0.05, key=P + "k", help="Samples with f_y ≤ k are pruned at each w-step. The paper uses 0.5.")
        st.text_input("Run name (optional)", key=P + "name", max_chars=200)
        if not teach:
            with st.expander("Advanced: optimiser, schedule, data"):
                a1, a2, a3 = st.columns(3)
                a1.number_input("Learning rate", min_value=1e-5, max_value=10.0, format="%.4g", key=P + "lr")
                a2.number_input("Batch size", min_value=1, max_value=65536, key=P + "batch_size")
                a3.selectbox("Optimiser", ["sgd", "adam"], key=P + "optimizer")
                a1.number_input("Momentum", min_value=0.0, max_value=0.99, format="%.2f", key=P + "momentum")
                a2.number_input("Weight decay", min_value=0.0, max_value=1.0, format="%.1e", key=P + "weight_decay")
                a3.number_input("LR gamma", min_value=0.001, max_value=1.0, format="%.3g", key=P + "lr_gamma")
                a1.text_input("LR milestones (epochs)", key=P + "lr_milestones", help="lr × gamma after these epochs, e.g. 40, 80")
                a2.number_input("Prune start (epoch)", min_value=1, key=P + "prune_start")
                a3.number_input("Prune every (epochs)", min_value=1, key=P + "prune_every")
                a1.number_input("Training subset (0 = all)", min_value=0, step=1000, key=P + "train_subset")
                a2.number_input("Validation share", min_value=0.01, max_value=0.5, format="%.2f", key=P + "val_fraction")
                a3.number_input("First seed", min_value=0, max_value=2**31 - 1, key=P + "first_seed")
                a1.selectbox("Class map (class-dependent noise)", [DEFAULT_MAP, *CLASS_MAP_NAMES], key=P + "class_map")
                a2.checkbox("Augment (crop + flip)", key=P + "augment")
                a3.checkbox("torch.compile", key=P + "compile", help="Compile the model: pays off on a GPU for long runs. The runs of one launch share one process and compile once.")
                st.caption(f"Data folder: `{data_root}` (set with $GCE_LAB_DATA before starting the lab).")
        b1, b2 = st.columns(2)
        preview = b1.form_submit_button("Preview", width="stretch")
        launch = b2.form_submit_button("Launch", type="primary", width="stretch")
    return preview, launch


def preview_panel(choices: lf.LaunchChoices, specs: list, info: dict) -> None:
    slots = int(info.get("slots") or 1)
    kind = lf.device_kind(info.get("devices") or [])
    m1, m2, m3 = st.columns(3)
    m1.metric("Runs", len(specs))
    total = lf.total_seconds(specs, slots, kind) if specs else 0.0
    m2.metric("Estimated time", lf.format_duration(total) if specs else "-")
    try:
        matrix = lf.noise_matrix(choices)
    except ValueError:
        matrix = None
    m3.metric("Wrong labels", "-" if matrix is None else f"{100 * lf.wrong_label_share(matrix):.0f}%", help="Expected share of training labels the noise changes (balanced classes).")
    if specs:
        st.caption(
            f"Rough estimate on {slots} slot(s) of {kind}: about {lf.format_duration(lf.run_seconds(specs[0], kind))} "
            f"per run ({choices.epochs} epochs of {choices.dataset}/{choices.model})."
        )
    if matrix is None:
        st.info("The noise transition matrix appears once the noise settings are valid.")
    else:
        names = DATASETS[choices.dataset].class_names
        title = f"{choices.noise} noise, η = {choices.noise_rate:g}, on {choices.dataset}"
        st.plotly_chart(charts.noise_heatmap(matrix, names, title=title), key=P + "heatmap", config=charts.png_config("noise-matrix"))
        wrong = lf.wrong_label_share(matrix)
        note = " Open-set noise keeps the labels and swaps images instead." if choices.noise == "open_set" else ""
        st.caption(f"In expectation {100 * wrong:.1f}% of the training labels will be wrong (balanced classes).{note}")
    for note in lf.advice(choices):
        st.warning(note)


def submit(client, specs: list, cap: int) -> None:
    mine = st.session_state.setdefault(P + "session_ids", [])
    problem = lf.session_cap_problem(session_active(client, mine), len(specs), cap)
    if problem:
        st.error(problem)
        return
    try:
        group, ids = client.submit_group(specs)
    except SubmitRefused as exc:
        for field, msg in exc.problems:
            st.error(f"{field}: {ui.md_escape(msg)}")
        return
    mine.extend(ids)
    st.session_state[P + "last"] = {"group": group, "ids": list(ids)}


def last_launch() -> None:
    last = st.session_state.get(P + "last")
    if not last:
        return
    ids = ",".join(map(str, last["ids"]))
    st.success(f"Queued {len(last['ids'])} run(s): #{ids.replace(',', ', #')}. Group: {ui.md_escape(last['group'])}.")
    c1, c2 = st.columns(2)
    c1.page_link("views/runs.py", label="Watch them live on Runs", icon=":material/monitoring:", query_params={"runs": ids})
    c2.page_link("views/compare.py", label="Compare them", icon=":material/stacked_line_chart:", query_params={"runs": ids})


client = ui.client()
cfg = ui.settings()
teach = ui.teaching()
st.title("Launch runs")
st.markdown("Train the same network on noisy labels with several losses and watch which one resists the noise.")
info = client.executor_info()
where_runs_go(info)

if ui.entered() or P + "preset" not in st.session_state:
    preset, choices = url_state.launch_from_params(ui.page_params("launch", URL_KEYS))
    ui.seed({P + "preset": preset, **form_values(choices)}, force=True)

presets = list(lf.PRESETS) if not teach else [lf.DEFAULT_PRESET]
if st.session_state[P + "preset"] not in presets:
    st.session_state[P + "preset"] = lf.DEFAULT_PRESET
left, right = st.columns([5, 4], gap="large")
with left:
    st.selectbox("Preset", presets, key=P + "preset", format_func=lambda k: lf.PRESETS[k].label, on_change=apply_preset)
    st.caption(lf.PRESETS[st.session_state[P + "preset"]].help)
    preview, launch = form(teach, str(cfg.data_root))
choices, problems = read_form(st.session_state[P + "preset"])
specs, spec_problems = lf.build_specs(choices)
problems += spec_problems
with left:
    for field, msg in problems:
        st.error(ui.md_escape(msg if field == "spec" else f"{field}: {msg}"))
    if launch and not problems:
        submit(client, specs, cfg.session_cap)
    last_launch()
with right:
    preview_panel(choices, specs if not problems else [], info)
ui.write_url("launch", url_state.launch_to_params(st.session_state[P + "preset"], choices))
