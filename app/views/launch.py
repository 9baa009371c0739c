"""Launch: pick data, noise and losses (every loss of the registry, with its own parameters), or a
sweep; the summary (runs, time, noise matrix) follows each change; queue the runs as one group.

The widgets are generated from ``launch_form.knobs()``: one per RunSpec field and per loss
parameter. Each widget's key is ``launch_<knob key>``; the form's values live in
``launch_form_values`` so that widgets hidden for a while (a loss not chosen, teaching mode)
keep theirs.
"""

from __future__ import annotations

import math
from collections import Counter

import streamlit as st

from app import charts, owner, ui, url_state
from app import launch_form as lf
from gce_core.data import DatasetFileError, DatasetNotFoundError, dataset_info
from gce_core.losses import LOSSES
from gce_core.noise import class_map_description, default_class_map
from jobs.client import SubmitRefused

P = "launch_"  # widget key prefix
VALUES = P + "form_values"
NOTES = P + "link_notes"
CONFIRM = P + "confirm"


# --- state -------------------------------------------------------------------------------------
def clear_widgets(keep: tuple[str, ...] = ()) -> None:
    """Forget the widgets' own state so they show the form values again."""
    for key in lf.knobs():
        if key not in keep:
            st.session_state.pop(P + key, None)


def reset(preset: str, values: dict, notes: list[str] = ()) -> None:
    st.session_state[P + "preset"] = preset
    st.session_state[VALUES] = dict(values)
    st.session_state[NOTES] = (list(notes), snapshot(values))
    clear_widgets()


def snapshot(values: dict) -> str:
    return repr(sorted((k, url_state.fmt(v)) for k, v in values.items()))


def on_preset() -> None:
    preset = st.session_state[P + "preset"]
    reset(preset, lf.defaults(preset, st.session_state[VALUES]["dataset"]))


def on_epochs() -> None:
    values = lf.with_epochs(st.session_state[VALUES], st.session_state[P + "preset"], st.session_state[P + "epochs"])
    st.session_state[VALUES] = values
    clear_widgets(keep=tuple(k for k in lf.knobs() if k not in ("lr_milestones", "prune_start", "prune_every")))


def on_dataset() -> None:
    values = lf.with_dataset(st.session_state[VALUES], st.session_state[P + "preset"], st.session_state[P + "dataset"])
    st.session_state[VALUES] = values
    clear_widgets(keep=("dataset",))


# --- widgets -------------------------------------------------------------------------------------
def widget(knob: lf.Knob, where, problems: list, *, label: str | None = None, **kw) -> None:
    """The widget of one knob; its value goes back into the form values (or a problem)."""
    key = P + knob.key
    values = st.session_state[VALUES]
    # Set it each run: a widget whose options or range change (the sweep's choices follow the
    # losses) would otherwise start again from its first value.
    st.session_state[key] = st.session_state[key] if key in st.session_state else lf.to_widget(knob, values[knob.key])
    label = label or knob.label
    options = kw.pop("options", None)
    common = dict(key=key, help=knob.help or None, **kw)
    finite = {k: v for k, v in (("min_value", knob.low), ("max_value", knob.high)) if math.isfinite(v)}
    if knob.kind == "bool":
        where.checkbox(label, **common)
    elif knob.kind == "int":
        ints = {k: int(v) for k, v in finite.items()}
        if knob.optional:
            ints["min_value"] = 0
        where.number_input(label, step=1, **ints, **common)
    elif knob.kind == "float":
        where.number_input(label, step=lf.step(knob), format="%g", **finite, **common)
    elif knob.kind == "choice":
        options = options or ([""] if knob.optional else []) + list(knob.choices)
        if st.session_state[key] not in options:
            st.session_state[key] = options[0]
        where.selectbox(label, options, format_func=knob.choice_label, **common)
    elif knob.kind == "multi":
        where.pills(label, list(knob.choices), selection_mode="multi", format_func=knob.choice_label, wrap=True, **common)
    else:
        where.text_input(label, max_chars=knob.max_chars, **common)
    value, problem = lf.from_widget(knob, st.session_state[key])
    if problem:
        problems.append((knob.key, problem))
    else:
        values[knob.key] = value


def rate_slider(ks: dict, where, problems: list) -> None:
    """The noise rate: a slider whose top is the highest rate the chosen noise accepts."""
    knob, key = ks["noise_rate"], P + "noise_rate"
    values = st.session_state[VALUES]
    current = st.session_state.get(key, values["noise_rate"])
    if not knob.contains(current):
        top = knob.clamp(current) or 0.0
        st.session_state[P + "rate_note"] = f"Noise rate η lowered from {current:g} to {top:g}: it must be in {knob.range_text} {knob.why}."
        st.session_state[key] = values["noise_rate"] = top
    else:
        st.session_state[key] = current  # kept when the slider's top moves (see widget)
    noise = values["noise"]
    where.slider(knob.label, 0.0, knob.high, step=lf.RATE_STEP, key=key, disabled=noise == "none",
                 help=f"Share of training labels selected for corruption; {knob.range_text} {knob.why}.")
    values["noise_rate"] = st.session_state[key]


def loss_rows(ks: dict, problems: list) -> None:
    """The chosen losses' own parameters, one row per loss with its formula."""
    for name in st.session_state[VALUES]["losses"]:
        loss = LOSSES[name]
        if not loss.params:
            continue
        cols = st.columns([2] + [1] * max(2, len(loss.params)), vertical_alignment="bottom")
        cols[0].markdown(f"**{loss.label}**  \n`{loss.formula}`")
        for col, p in zip(cols[1:], loss.params, strict=False):
            widget(ks[f"{name}.{p.name}"], col, problems, label=p.name)


def form(teach: bool, data_root: str) -> list[tuple[str, str]]:
    """Every widget of the form; returns the problems of text that did not parse."""
    problems: list[tuple[str, str]] = []
    values = st.session_state[VALUES]
    ks = lf.knobs(values)
    c1, c2 = st.columns(2)
    widget(ks["dataset"], c1, problems, on_change=on_dataset)
    widget(ks["model"], c2, problems)
    widget(ks["noise"], c1, problems)
    ks = lf.knobs(values)  # the rate's top follows the noise kind just chosen
    rate_slider(ks, c2, problems)
    note = st.session_state.pop(P + "rate_note", None)
    if note:
        st.info(note)
    shown = [f for f in lf.SHOWN_WHEN if values.get(lf.SHOWN_WHEN[f][0]) == lf.SHOWN_WHEN[f][1]]
    for field, col in zip(shown, (c1, c2), strict=False):
        options = None
        if field == "class_map":
            options = ["", *lf.class_map_choices(values["dataset"])]
        elif field == "human_labels":
            options = ["", *lf.human_label_choices(values["dataset"])]
        widget(ks[field], col, problems, **({"options": options} if options else {}))
    if values.get("noise") == "class_dependent":
        cmap = values.get("class_map") or default_class_map(values["dataset"])
        st.caption(f"Class map {cmap}: {class_map_description(cmap)}")
    widget(ks["losses"], st, problems)
    loss_rows(ks, problems)
    c1, c2, c3 = st.columns(3)
    widget(ks["epochs"], c1, problems, on_change=on_epochs)
    widget(ks["seeds"], c2, problems)
    if not teach:
        widget(ks["seed"], c3, problems)
    takers = [p.name for n in values["losses"] for p in LOSSES[n].params]
    options = list(dict.fromkeys(["", "noise_rate", *takers, values.get("sweep") or ""]))
    c1, c2 = st.columns([1, 2])
    widget(ks["sweep"], c1, problems, options=options)
    widget(ks["sweep_values"], c2, problems, disabled=not values.get("sweep"), placeholder="e.g. 0.1, 0.4, 0.7, 1.0")
    widget(ks["name"], st, problems)
    if not teach:
        rest = [k for k in lf.form_fields() if k not in lf.MAIN_FIELDS and k != "seed"]
        with st.expander("Advanced: optimiser, schedule, data"):
            cols = st.columns(3)
            for i, key in enumerate(rest):
                widget(ks[key], cols[i % 3], problems)
            st.caption(f"Data folder: `{data_root}` (set with $GCE_LAB_DATA before starting the lab).")
    return problems


# --- the summary ---------------------------------------------------------------------------------
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


def submit(client, specs: list, values: dict, cap: int) -> bool:
    field = values.get("sweep") or ""
    tags = (f"sweep {field}",) if field and values.get("sweep_values") else ()
    try:  # as this browser's owner, under its cap (checked again here, under a lock)
        group, ids = owner.submit_owned(client, specs, cap, tags=tags)
    except SubmitRefused as exc:
        st.error(f"Nothing was queued: {ui.md_escape(str(exc))}")
        return False
    st.session_state[P + "last"] = {"group": group, "ids": list(ids)}
    st.session_state.pop(CONFIRM, None)
    return True


def last_launch() -> None:
    last = st.session_state.get(P + "last")
    if not last:
        return
    ids = ",".join(map(str, last["ids"]))
    st.success(f"Queued {len(last['ids'])} run(s) as group {ui.md_escape(last['group'])}.")
    st.page_link("views/runs.py", label="Watch them live on Runs", icon=":material/monitoring:", query_params={"runs": ids})
    st.page_link("views/compare.py", label="Compare them", icon=":material/stacked_line_chart:", query_params={"runs": ids})


def launch_panel(client, cfg, info: dict, values: dict, specs: list, problems: list) -> None:
    """Runs, time, wrong labels; the Launch button with what blocks it; the confirmation."""
    slots = max(1, int(info.get("slots") or 1))
    kind = lf.device_kind(info.get("devices") or [])
    total = lf.total_seconds(specs, slots, kind) if specs else None
    realised = None
    try:
        realised = lf.realised_noise(values, specs if not problems else [])
        matrix = realised.transition if realised is not None else lf.noise_matrix(values)
    except (ValueError, KeyError, DatasetNotFoundError, DatasetFileError):
        matrix = None
    m1, m2, m3 = st.columns([2, 3, 3])
    m1.metric("Runs", len(specs) if not problems else "-")
    m2.metric("Estimated time", lf.format_duration(total) if total is not None and not problems else "-")
    m3.metric("Wrong labels", "-" if matrix is None else f"{100 * lf.wrong_label_share(matrix):.0f}%",
              help="Expected share of training labels the noise changes (balanced classes).")
    ks = lf.knobs(values)
    blockers = [ui.md_escape(lf.label_problem(k, m, ks)) for k, m in problems]
    missing = lf.data_problem(values["dataset"], cfg.data_root)  # gce_core's text, with its `commands`
    if missing:
        blockers.append(missing)
    over = lf.session_cap_problem(owner.active_runs(client, owner.current_owner()), len(specs), cfg.session_cap)
    if over and not problems:
        blockers.append(ui.md_escape(over))
    blockers += map(ui.md_escape, lf.lab_limit_problems(specs, client.limits.max_epochs, client.limits.max_group_size))
    n = len(specs)
    label = f"Launch {n} run{'s' if n != 1 else ''}" if specs and not problems else "Launch"
    launch = st.button(label, type="primary", width="stretch", disabled=bool(blockers), key=P + "launch")
    for text in blockers:
        st.error(text)
    fp = lf.fingerprint(specs) if specs else ""
    if launch and not blockers:
        if total is not None and total > lf.CONFIRM_SECONDS:
            st.session_state[CONFIRM] = fp
        else:
            submit(client, specs, values, cfg.session_cap)
    if st.session_state.get(CONFIRM):
        if st.session_state[CONFIRM] != fp or blockers:
            st.session_state.pop(CONFIRM)
        else:
            st.warning(f"These {n} runs take about {lf.format_duration(total)} on {slots} slot(s) of {kind}. Queue them anyway?")
            b1, b2 = st.columns(2)
            if b1.button("Yes, queue them", type="primary", width="stretch", key=P + "confirm_yes") and submit(client, specs, values, cfg.session_cap):
                st.rerun()
            if b2.button("No, change the form", width="stretch", key=P + "confirm_no"):
                st.session_state.pop(CONFIRM)
                st.rerun()
    last_launch()
    where_runs_go(info)
    if specs and total is not None:
        st.caption(f"Rough estimate on {slots} slot(s) of {kind}: about {lf.format_duration(lf.run_seconds(specs[0], kind))} "
                   f"per run ({values['epochs']} epochs of {values['dataset']}/{values['model']}).")
    if matrix is None:
        st.info("The noise transition matrix appears once the noise settings are valid.")
    else:
        names = realised.class_names if realised is not None else dataset_info(values["dataset"]).class_names
        words = lf.CHOICE_LABELS["noise"].get(values["noise"], values["noise"]).split(" (")[0]
        title = f"{words} noise, η = {values['noise_rate']:g}, on {values['dataset']}"
        st.plotly_chart(charts.noise_heatmap(matrix, names, title=title), key=P + "heatmap", config=charts.png_config("noise-matrix"))
        note = " Open-set noise keeps the labels and swaps images instead." if values["noise"] == "open_set" else ""
        if realised is not None:
            st.caption(f"Realised on this data set's training images: {100 * realised.rate:.1f}% of the labels are wrong "
                       f"(per class {100 * float(realised.class_rates.min()):.0f}% to {100 * float(realised.class_rates.max()):.0f}%).")
        else:
            st.caption(f"In expectation {100 * lf.wrong_label_share(matrix):.1f}% of the training labels will be wrong (balanced classes).{note}")
    for note in lf.advice(values):
        st.warning(note)


# --- the page --------------------------------------------------------------------------------------
client = ui.client()
cfg = ui.settings()
teach = ui.teaching()
st.title("Launch runs")
st.caption("Train the same network on noisy labels with several losses and watch which one resists the noise.")
info = client.executor_info()

if ui.entered() or VALUES not in st.session_state:
    reset(*url_state.launch_from_params(ui.page_params("launch", url_state.launch_keys())))
presets = list(lf.preset_names()) if not teach else [lf.DEFAULT_PRESET]
if st.session_state[P + "preset"] not in presets:
    st.session_state[P + "preset"] = lf.DEFAULT_PRESET
    on_preset()

left, right = st.columns([5, 4], gap="large")
with left:
    st.selectbox("Preset", presets, key=P + "preset", on_change=on_preset,
                 help="Every data set has its own settings in each preset (gce_core.spec.PRESETS).")
    st.caption(lf.PRESET_HELP.get(st.session_state[P + "preset"], ""))
    note = lf.preset_note(st.session_state[P + "preset"], st.session_state[VALUES]["dataset"])
    if note:
        st.info(f"The form keeps its settings: {note}")
    notes_box = st.container()
    form_problems = form(teach, str(cfg.data_root))
values = st.session_state[VALUES]
notes, taken = st.session_state.get(NOTES, ([], ""))
if notes and snapshot(values) == taken:  # the link's notes, until the form changes
    for note in notes:
        notes_box.warning(ui.md_escape(note))
specs, spec_problems = lf.build_specs(values) if not form_problems else ([], [])
with right:
    launch_panel(client, cfg, info, values, specs, form_problems + spec_problems)
ui.write_url("launch", url_state.launch_to_params(st.session_state[P + "preset"], values))
