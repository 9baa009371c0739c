"""AppTest tests of every page with a real store in a temporary folder (no browser)."""

from __future__ import annotations

import pathlib

import pytest
from streamlit.testing.v1 import AppTest

from gce_core.noise import expected_transition
from gce_core.spec import from_preset
from jobs.client import LabClient
from jobs.status import RunStatus
from tests.app_helpers import assert_titled, chart_specs, train_queued, values, vega_charts

MAIN = str(pathlib.Path(__file__).resolve().parent.parent / "app" / "main.py")


@pytest.fixture
def client(lab_home) -> LabClient:
    """A real store in tmp_path (conftest's lab_home clears every other GCE_LAB_* variable)."""
    from streamlit import config

    # As .streamlit/config.toml says, should pytest run from elsewhere: the page refuses to
    # render on a non-loopback address without a password.
    config.set_option("server.address", "127.0.0.1")
    return LabClient()


def test_the_page_refuses_a_public_address_without_password(client):
    from streamlit import config

    config.set_option("server.address", "0.0.0.0")
    try:
        at = app().run()
    finally:
        config.set_option("server.address", "127.0.0.1")
    assert "refusing to serve the lab on '0.0.0.0' without a password" in at.error[0].value
    assert not at.title  # nothing else rendered


def app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params.update(query or {})
    return at


def page(at: AppTest, path: str, query: dict | None = None) -> AppTest:
    at.query_params.clear()
    at.query_params.update(query or {})
    return at.switch_page(path).run()


def plain(markdown: str) -> str:
    """Markdown source as the reader sees it (escapes removed)."""
    return markdown.replace("\\", "")


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def button(at: AppTest, label: str):
    return next(b for b in [*at.button, *at.form_submit_button] if b.label.startswith(label))


def submit_demo(client: LabClient, seeds: int = 1, losses=("cce", "mae", "lq")) -> tuple[str, list[str]]:
    specs = [from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=6, loss=loss, seed=s)
             for loss in losses for s in range(seeds)]
    return client.submit_group(specs)


# --- Launch -------------------------------------------------------------------------------------
def test_first_screen_is_the_quick_demo_and_one_click_launches_it(client):
    at = app().run()
    no_errors(at)
    assert at.title[0].value == "Launch runs"
    assert at.selectbox(key="launch_preset").value == "quick"
    assert {m.label: m.value for m in at.metric}["Runs"] == "3"
    assert "digits" in chart_specs(at)[0]["layout"]["title"]["text"]  # the noise heatmap
    assert_titled(chart_specs(at)[0])
    assert any("No worker is running" in w.value for w in at.warning)  # says where runs go
    button(at, "Launch").click().run()
    no_errors(at)
    runs = client.list_runs()
    assert sorted(r.spec.loss for r in runs) == ["cce", "lq", "mae"]
    assert all(r.status == RunStatus.QUEUED and r.spec.noise_rate == 0.4 for r in runs)
    assert len({r.group for r in runs}) == 1
    assert "Queued 3 run(s)" in at.success[0].value
    assert at.query_params["preset"] == ["quick"] or at.query_params["preset"] == "quick"


def test_launch_shows_spec_problems_inline_and_queues_nothing(client):
    at = app().run()
    at.slider(key="launch_noise_rate").set_value(0.9)
    button(at, "Launch").click().run()
    assert not at.exception
    assert any("uniform noise needs rate < 1 - 1/c = 0.9" in plain(e.value) for e in at.error)
    assert client.count_runs() == 0
    at.pills(key="launch_losses").set_value([])
    button(at, "Preview").click().run()
    assert any("pick at least one loss" in e.value for e in at.error)


def test_launch_state_comes_from_and_goes_to_the_url(client):
    at = app({"preset": "quick", "rate": "0.2", "losses": "lq,truncated_lq", "seeds": "2", "noise": "class_dependent"}).run()
    no_errors(at)
    assert at.slider(key="launch_noise_rate").value == 0.2
    assert at.pills(key="launch_losses").value == ["lq", "truncated_lq"]
    assert {m.label: m.value for m in at.metric}["Runs"] == "4"
    at.number_input(key="launch_epochs").set_value(50)
    button(at, "Preview").click().run()
    assert at.query_params["epochs"] in ("50", ["50"])
    assert at.query_params["rate"] in ("0.2", ["0.2"])


def test_paper_preset_fills_the_form(client):
    at = app().run()
    at.selectbox(key="launch_preset").set_value("paper_cifar100").run()
    no_errors(at)
    assert at.selectbox(key="launch_dataset").value == "cifar100"
    assert at.selectbox(key="launch_model").value == "resnet34"
    assert at.number_input(key="launch_epochs").value == 150
    assert at.text_input(key="launch_lr_milestones").value == "80, 120"
    assert any("data folder" in w.value for w in at.warning)  # CIFAR is not embedded
    assert {m.label: m.value for m in at.metric}["Runs"] == "15"


def test_session_cap_refuses_more_runs(client, monkeypatch):
    monkeypatch.setenv("GCE_LAB_SESSION_CAP", "4")
    at = app().run()
    button(at, "Launch").click().run()
    assert client.count_runs() == 3
    button(at, "Launch").click().run()
    assert any("cap is 4 per session" in e.value for e in at.error)
    assert client.count_runs() == 3


def test_teaching_mode_hides_advanced_controls(client):
    at = app({"teach": "1"}).run()
    no_errors(at)
    assert not any(e.label.startswith("Advanced") for e in at.expander)
    assert at.selectbox(key="launch_preset").options == ["Quick demo: digits, 40% uniform, CCE vs MAE vs Lq"]
    assert at.toggle(key="main_teaching").value is True
    submit_demo(client)
    at = page(at, "views/runs.py")
    labels = [b.label for b in at.button]
    assert any(label.startswith("Cancel") for label in labels)
    assert "Archive" not in labels
    assert at.query_params["teach"] in ("1", ["1"])
    normal = app().run()
    assert any(e.label.startswith("Advanced") for e in normal.expander)


# --- Runs ---------------------------------------------------------------------------------------
def test_runs_table_curves_and_cancel(client):
    _, ids = submit_demo(client)
    train_queued(client, epochs=3, complete=False)  # all three running, 3 epochs in
    _, waiting = submit_demo(client, losses=("lq",))
    at = page(app(), "views/runs.py", {"runs": ",".join(ids)})
    no_errors(at)
    table = at.dataframe[0].value
    assert len(table) == 4
    assert set(table[table["id"].isin(ids)]["epochs"]) == {"3/6"}
    assert table.set_index("id").loc[waiting[0], "status"].endswith("queued")
    spec, datasets = vega_charts(at)[0]
    detail = spec["vconcat"][0]
    assert detail["title"]["text"] and detail["encoding"]["x"]["title"] == "epoch"
    assert detail["encoding"]["y"]["title"] == "test accuracy (%)"
    curves = datasets["curves"]
    assert curves.groupby("run")["epoch"].apply(list).tolist() == [[1, 2, 3]] * 3
    assert at.multiselect(key="runs_selected").value == ids
    at.multiselect(key="runs_selected").set_value([waiting[0]]).run()
    button(at, "Cancel").click().run()
    no_errors(at)
    assert client.get(waiting[0]).status == RunStatus.CANCELLED
    assert client.get(ids[0]).status == RunStatus.RUNNING


def test_runs_tag_archive_delete(client):
    _, ids = submit_demo(client)
    train_queued(client, epochs=6)
    at = page(app(), "views/runs.py", {"runs": ids[0]})
    at.text_input(key="runs_tags").input("baseline, paper")
    button(at, "Add tags").click().run()
    no_errors(at)
    assert client.get(ids[0]).tags == ("baseline", "paper")
    button(at, "Archive").click().run()
    assert client.get(ids[0]).archived
    at.toggle(key="runs_archived").set_value(True).run()
    at.multiselect(key="runs_selected").set_value([ids[0]]).run()
    button(at, "Delete for good").click().run()
    no_errors(at)
    with pytest.raises(KeyError):
        client.get(ids[0])
    assert client.count_runs() == 2


def test_runs_page_without_runs_points_to_launch(client):
    at = page(app(), "views/runs.py")
    no_errors(at)
    assert "No runs yet" in at.info[0].value


# --- Compare ------------------------------------------------------------------------------------
def test_compare_groups_seeds_into_bands_with_a_results_table(client):
    group, ids = submit_demo(client, seeds=2)
    train_queued(client, epochs=6)
    at = page(app(), "views/compare.py", {"group": group})
    no_errors(at)
    assert sorted(at.multiselect(key="compare_selected").value) == sorted(ids)
    fig = chart_specs(at)[0]
    assert_titled(fig)
    assert "mean ± std" in fig["layout"]["yaxis"]["title"]["text"]
    names = [t.get("name") for t in fig["data"] if t.get("showlegend") is not False]
    assert names == ["CCE (n=2)", "MAE (n=2)", "Lq q=0.7 (n=2)"]
    summary = at.dataframe[0].value.set_index("group")
    assert list(summary["runs"]) == [2, 2, 2]
    assert " ± " in summary.loc["CCE", "test acc @ best val (%)"]
    diff = at.dataframe[1].value
    assert sorted(diff.columns) == ["loss", "q", "seed"]  # q is Lq's parameter: CCE runs hold none
    at.selectbox(key="compare_metric").set_value("memorised").run()
    at.selectbox(key="compare_by").set_value("run").run()
    no_errors(at)
    fig = chart_specs(at)[0]
    assert "memorised" in fig["layout"]["yaxis"]["title"]["text"]
    assert at.query_params["metric"] in ("memorised", ["memorised"])
    assert at.query_params["by"] in ("run", ["run"])
    csv = at.get("download_button")[0]
    assert csv.proto.label == "Download CSV"
    text = client.export_csv(ids)
    assert text.splitlines()[0] == "run_id,name,epoch,metric,value" and ids[0] in text


# --- Theory -------------------------------------------------------------------------------------
def test_theory_page_figures_and_a_run_in_its_band(client):
    at = page(app(), "views/theory.py")
    no_errors(at)
    figs = chart_specs(at)
    assert len(figs) == 5  # loss, gradient weight, bounds, the loss zoo's values and gradient weights
    for fig in figs:
        assert_titled(fig)
    assert len(figs[3]["data"]) == len(figs[4]["data"]) == 7  # the losses that depend on f_y alone
    assert any("Not drawn, because their value is not a function of f_y alone: NCE+RCE, NCE+MAE, "
               "bootstrapping (soft), bootstrapping (hard), forward (true T), forward (estimated T)" in c.value
               for c in at.caption)
    zoo = at.dataframe[-1].value
    assert len(zoo) == 13 and "for every output (symmetric)" in zoo.set_index("name").loc["nce_mae", "sum over the 10 labels"]
    at.number_input(key="theory_c").set_value(100).run()
    assert "100 labels" in chart_specs(at)[2]["layout"]["title"]["text"]
    assert "sum over the 100 labels" in at.dataframe[-1].value.columns
    _, ids = submit_demo(client, losses=("lq",))
    train_queued(client, epochs=4)
    at = page(app(), "views/theory.py", {"run": ids[0], "q": "0.5,0.7"})
    no_errors(at)
    figs = chart_specs(at)
    assert len(figs) == 6
    run_fig = figs[5]
    assert_titled(run_fig)
    assert values(run_fig["data"][-1], "x") == [1, 2, 3, 4]
    assert at.pills(key="theory_qs").value == [0.5, 0.7]


# --- Noise insight ------------------------------------------------------------------------------
def test_insight_shows_forward_ests_estimated_matrix_beside_the_true_one(client):
    spec = from_preset("quick", "digits", noise="class_dependent", noise_rate=0.4, epochs=4, loss="forward_est")
    run_id = client.submit(spec)
    train_queued(client)
    at = page(app(), "views/insight.py", {"run": run_id})
    no_errors(at)
    figs = chart_specs(at)
    assert len(figs) == 4  # histogram, memorisation, the estimated and the true transition matrix
    estimated, true = figs[2], figs[3]
    assert "Estimated before epoch 2" in estimated["layout"]["title"]["text"]
    row = next(r for r in client.metrics(run_id) if "transition_estimate" in r)
    assert values(estimated["data"][0], "z") == [v for r in row["transition_estimate"] for v in r]
    want = expected_transition("class_dependent", 0.4, 10, spec.class_map)  # the noise's own matrix
    assert values(true["data"][0], "z") == pytest.approx(want.flatten().tolist())
    assert sorted(set(want.flatten().tolist())) == [0.0, 0.4, 0.6]  # every digit flips to the next


def test_insight_histograms_and_pruning_quality(client):
    spec = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=6, loss="truncated_lq", prune_start=3, prune_every=1)
    run_id = client.submit(spec)
    train_queued(client)
    at = page(app(), "views/insight.py", {"run": run_id, "epoch": "2"})
    no_errors(at)
    assert at.slider(key="insight_epoch").value == 2
    figs = chart_specs(at)
    assert len(figs) == 3  # histogram, memorisation, pruning
    for fig in figs:
        assert_titled(fig)
    assert "epoch 2" in figs[0]["layout"]["title"]["text"]
    assert [t["name"] for t in figs[2]["data"]] == ["pruning precision (%)", "pruning recall (%)"]


def test_insight_explains_runs_without_flips(client):
    run_id = client.submit(from_preset("quick", "digits", epochs=3, loss="cce"))
    train_queued(client)
    at = page(app(), "views/insight.py", {"run": run_id})
    no_errors(at)
    assert "no flipped labels" in at.info[0].value


# --- Security -----------------------------------------------------------------------------------
def test_password_gate(client, monkeypatch):
    monkeypatch.setenv("GCE_LAB_PASSWORD", "s3cret")
    at = app().run()
    assert [t.value for t in at.title] == ["GCE Lab"]
    assert not at.get("plotly_chart")  # nothing else rendered
    at.text_input(key="main_password").input("wrong")
    button(at, "Enter").click().run()
    assert at.error[0].value == "Wrong password."
    at.text_input(key="main_password").input("s3cret")
    button(at, "Enter").click().run()
    no_errors(at)
    assert at.title[0].value == "Launch runs"


def test_user_text_is_not_rendered_as_markup(client):
    spec = from_preset("quick", "digits", epochs=3, loss="lq", name="**bold** [x](http://e.org) <img src=x>")
    run_id = client.submit(spec, tags=["<b>t</b>"])
    at = page(app(), "views/runs.py", {"runs": run_id})
    no_errors(at)
    shown = "".join(m.value for m in at.markdown) + "".join(c.value for c in at.caption)
    assert "**bold**" not in shown and "<img" not in shown and "<b>" not in shown
    table = at.dataframe[0].value
    assert table.loc[0, "run"].startswith("**bold**")  # shown as plain text in a cell
    assert table.loc[0, "tags"] == "<b>t</b>"


def test_a_page_gets_its_state_back_after_navigating_away(client):
    group, _ = submit_demo(client)
    train_queued(client, epochs=3)
    at = page(app(), "views/compare.py", {"group": group})
    at.selectbox(key="compare_metric").set_value("val_acc").run()
    at = page(at, "views/theory.py")  # the sidebar drops the query string
    assert "metric" not in at.query_params
    at = page(at, "views/compare.py")
    no_errors(at)
    assert at.selectbox(key="compare_metric").value == "val_acc"
    assert at.query_params["metric"] in ("val_acc", ["val_acc"])


def test_a_failed_run_says_why(client):
    run_id = client.submit(from_preset("quick", "digits", epochs=3, loss="cce"))
    run = client.store.claim(worker_id="test", host="test", device="cpu", now=0.0)
    client.store.finish(run.id, run.claim_token, RunStatus.FAILED, now=1.0, error="exit code 1: DatasetNotFoundError: boom")
    at = page(app(), "views/runs.py", {"runs": run_id})
    assert not at.exception
    assert any("Why run" in e.label for e in at.expander)
    assert "DatasetNotFoundError: boom" in at.code[0].value
