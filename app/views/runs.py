"""Runs: the table of runs with live status, actions on a selection, live curves."""

from __future__ import annotations

import streamlit as st

from app import charts, owner, ui, url_state
from app import compare_logic as cl
from app import runs_logic as rl
from jobs.client import check_tags
from jobs.status import RunStatus

P = "runs_"
URL_KEYS = ("runs", "metric", "status", "group", "archived")
STATUSES = [s.value for s in RunStatus]
CURVE_METRICS = ["test_acc", "val_acc", "train_acc_noisy", "train_acc_clean", "memorised", "train_loss", "loss_sum_mean"]
ALL_GROUPS = "(all groups)"
LIMIT = 500


def seed_from_url(client) -> None:
    params = ui.page_params("runs", URL_KEYS)
    groups = client.groups()
    ids = url_state.get_ids(params)
    if not ids:
        last = st.session_state.get("launch_last")
        ids = last["ids"] if last else []
    if not ids:
        mine = client.list_runs(owner=owner.current_owner(), limit=1) if ui.teaching() else []
        newest = mine or client.list_runs(limit=1)  # in teaching mode this browser's newest group
        if newest and newest[0].group:
            ids = [r.id for r in client.list_runs(group=newest[0].group, limit=12)]
    ui.seed_filters(P, {k: v for k, v in st.query_params.to_dict().items() if k.startswith("f.")} or
                    {k: v for k, v in params.items() if k.startswith("f.")}, client.list_runs(limit=LIMIT, include_archived=True))
    ui.seed({
        P + "status": url_state.get_list(params, "status", [], STATUSES),
        P + "group": url_state.get_str(params, "group", ALL_GROUPS, groups),
        P + "archived": url_state.get_bool(params, "archived"),
        P + "metric": url_state.get_str(params, "metric", "test_acc", CURVE_METRICS),
        P + "selected": ids,
    }, force=True)


def filters(client) -> dict:
    c1, c2, c3 = st.columns([3, 3, 1])
    status = c1.multiselect("Status", STATUSES, key=P + "status", placeholder="any status")
    group = c2.selectbox("Group", [ALL_GROUPS, *client.groups()], key=P + "group")
    archived = c3.toggle("Archived too", key=P + "archived")
    return {
        "status": [RunStatus(s) for s in status] or None,
        "group": None if group == ALL_GROUPS else group,
        "include_archived": archived,
    }


def act(calls: list, what: str) -> None:
    """Run store actions (``(function, run id)`` pairs), keep what failed for the next run to show
    (st.rerun erases what this run drew), then rerun so the page follows."""
    failed = []
    for action, run_id in calls:
        try:
            action()
        except (KeyError, ValueError) as exc:
            failed.append(f"Could not {what} run {run_id}: {exc}")
    st.session_state[P + "errors"] = failed
    st.rerun()


def show_errors() -> None:
    """The errors of the last action (kept over its rerun), once."""
    for message in st.session_state.pop(P + "errors", []):
        st.error(ui.md_escape(message))


def tags_problem(tags: list[str]) -> str | None:
    if not tags:
        return "Type one or more tags, separated by commas."
    try:
        check_tags(tags)
    except ValueError as exc:
        return f"Not tagged: {exc}."
    return None


def actions(client, chosen: list, teach: bool) -> None:
    if not chosen:
        st.caption("Select runs above to plot them and to act on them.")
        return
    busy = rl.cancellable(chosen)
    cols = st.columns([1, 1, 1, 3] if not teach else [1, 5])
    if cols[0].button(f"Cancel ({len(busy)})", key=P + "cancel", disabled=not busy, help="Stop queued or running runs; finished ones are not touched."):
        act([(lambda run_id=run_id: client.cancel(run_id), run_id) for run_id in busy], "cancel")
    if teach:
        return
    archive = not all(r.archived for r in chosen)
    if cols[1].button("Archive" if archive else "Unarchive", key=P + "archive", help="Archived runs are hidden unless 'Archived too' is on."):
        act([(lambda r=r: client.archive(r.id, archived=archive), r.id) for r in chosen], "archive" if archive else "unarchive")
    with cols[2].popover("Delete"):
        ok, busy_ids = rl.deletable(chosen)
        st.write(f"Delete {len(ok)} finished run(s) and their metrics for good?")
        if busy_ids:
            st.caption(f"{len(busy_ids)} run(s) still active: cancel them first.")
        if st.button("Delete for good", key=P + "delete", type="primary", disabled=not ok):
            st.session_state.pop(P + "selected", None)
            act([(lambda run_id=run_id: client.delete(run_id), run_id) for run_id in ok], "delete")
    with cols[3].form(P + "tag_form", border=False):
        t1, t2 = st.columns([3, 1], vertical_alignment="bottom")
        text = t1.text_input("Tags (comma-separated)", key=P + "tags", placeholder="baseline, paper")
        if t2.form_submit_button("Add tags"):
            new = rl.parse_tags(text)
            problem = tags_problem(new)
            if problem:
                st.error(ui.md_escape(problem))  # no rerun: it stays
            else:
                act([(lambda r=r: client.tag(r.id, sorted({*r.tags, *new})), r.id) for r in chosen], "tag")


COLUMNS = {
    "selected": st.column_config.CheckboxColumn("plot", width=40),
    "id": st.column_config.TextColumn("id", width=110),
    "run": st.column_config.TextColumn("run", width="medium"),
    "status": st.column_config.TextColumn("status", width=110),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent", width=120),
    "epochs": st.column_config.TextColumn("epochs", width=70),
    "ETA": st.column_config.TextColumn("ETA", width=90),
    "device": st.column_config.TextColumn("device", width=70),
    "test acc @ best val (%)": st.column_config.TextColumn("test acc @ best val (%)", width=90),
}


def live(run_filter: dict, chosen_values: dict, selected: list[str], metric: str, signature: tuple) -> None:
    """The refreshing part: table and curves (re-run alone every few seconds)."""
    client = ui.client()
    records = listed(client, run_filter)
    if rl.status_signature(records) != signature:
        st.rerun()  # a run started, finished or was archived: the action buttons must follow
    records = cl.apply_filters(records, chosen_values)
    table = rl.runs_table(records, selected)
    st.dataframe(table, hide_index=True, width="stretch", key=P + "table", column_config=COLUMNS)
    if not selected:
        return
    chosen = [r for r in records if r.id in set(selected)]
    order = cl.ordered({r.id: r.spec for r in chosen})
    chosen.sort(key=lambda r: list(order).index(r.id))
    frame = client.metrics_frame([r.id for r in chosen])
    if frame.empty and rl.any_active(chosen):
        st.info("No epoch finished yet for the selected runs; curves appear after the first epoch.")
    elif frame.empty:
        st.info("The selected runs stopped before their first epoch: nothing to plot.")
    else:
        labels = {r.id: rl.run_label(r) for r in chosen}
        colors = rl.run_colors(chosen, labels)
        st.vega_lite_chart(spec=charts.live_curves(frame, metric, labels, colors), width="stretch")
    for r in chosen:
        if r.status == RunStatus.COMPLETED and r.warning:
            st.warning(f"**Run #{r.id} ({ui.md_escape(r.spec.label())})**: {ui.md_escape(r.warning)}")
        if r.status == RunStatus.QUEUED and r.storage_faults and r.error:
            st.warning(f"**Run #{r.id} waits for storage.** {ui.md_escape(r.error)}")
        if r.status == RunStatus.FAILED:
            why, details = rl.failure_text(r.error)
            st.error(f"**Run #{r.id} ({ui.md_escape(r.spec.label())}) failed.** {ui.md_escape(why)}")
            if details:
                with st.expander(f"Why run {r.id} failed: the details"):
                    st.code(details, language=None, wrap_lines=True)


def listed(client, run_filter: dict) -> list:
    """The runs to show, newest first; in teaching mode this browser's own runs come first (a
    class's runs do not bury each other)."""
    records = client.list_runs(**run_filter, limit=LIMIT)
    if not ui.teaching():
        return records
    me = owner.current_owner()
    mine = client.list_runs(**run_filter, owner=me, limit=LIMIT)
    return owner.own_first(mine + [r for r in records if r.owner != me], me)[:LIMIT]


client = ui.client()
cfg = ui.settings()
teach = ui.teaching()
st.title("Runs")
show_errors()
if ui.entered() or P + "metric" not in st.session_state:
    seed_from_url(client)

if client.count_runs(include_archived=True) == 0:
    ui.empty_state("No runs yet. Launch the quick demo: three small runs that finish in seconds.", "views/launch.py", "Go to Launch")
    ui.write_url("runs", {})
    st.stop()

run_filter = filters(client)
listed_records = listed(client, run_filter)
records, chosen_values = ui.filter_runs(P, listed_records, exclude=("status",), total=client.count_runs(**run_filter))
c1, c2 = st.columns([4, 2])
with c1:
    selected = ui.pick_runs("Runs to plot and act on", P + "selected", records)
metric = c2.selectbox("Curve", CURVE_METRICS, key=P + "metric", format_func=lambda m: charts.metric_title(m))
chosen = [r for r in records if r.id in set(selected)]
actions(client, chosen, teach)

period = cfg.refresh_seconds if rl.any_active(records) else 5 * cfg.refresh_seconds
st.fragment(run_every=period)(live)(run_filter, chosen_values, selected, metric, rl.status_signature(listed_records))

if selected:
    st.page_link("views/compare.py", label="Compare these runs", icon=":material/stacked_line_chart:", query_params={"runs": ",".join(selected)})
ui.write_url("runs", {
    "runs": ",".join(selected),
    "metric": metric if metric != "test_acc" else None,
    "status": ",".join(s.value for s in run_filter["status"] or []),
    "group": run_filter["group"],
    "archived": "1" if run_filter["include_archived"] else None,
    **ui.filter_params(P),
})
