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


def test_launch_shows_problems_in_the_forms_words_and_queues_nothing(client):
    at = app().run()
    at.text_input(key="launch_lr_milestones").input("70").run()  # the quick demo has 60 epochs
    assert not at.exception
    assert any(plain(e.value).startswith("LR milestones (epochs) must be increasing epochs") for e in at.error)
    assert button(at, "Launch").disabled
    assert client.count_runs() == 0
    at.text_input(key="launch_lr_milestones").input("").run()
    at.pills(key="launch_losses").set_value([]).run()  # no Preview click: the summary follows at once
    assert any("pick at least one loss" in e.value for e in at.error)
    assert {m.label: m.value for m in at.metric}["Runs"] == "-"


def test_launch_state_comes_from_and_goes_to_the_url(client):
    at = app({"preset": "quick", "rate": "0.2", "losses": "lq,truncated_lq", "seeds": "2", "noise": "class_dependent"}).run()
    no_errors(at)
    assert at.slider(key="launch_noise_rate").value == 0.2
    assert at.pills(key="launch_losses").value == ["lq", "truncated_lq"]
    assert {m.label: m.value for m in at.metric}["Runs"] == "4"
    at.number_input(key="launch_epochs").set_value(50).run()
    assert at.query_params["epochs"] in ("50", ["50"])
    assert at.query_params["rate"] in ("0.2", ["0.2"])
    assert {m.label: m.value for m in at.metric}["Runs"] == "4"


@pytest.mark.parametrize(("query", "note"), [
    ({"rate": "2"}, "Link parameter rate=2: Noise rate η must be in [0, 0.85]"),
    ({"q": "0.01", "epochs": "abc"}, "Link parameter epochs=abc: Epochs must be a whole number in [1, 5000]"),
    ({"loss": "nope"}, "Link parameter loss=nope: Losses to compare has no 'nope'"),
    ({"noise": "class_dependent", "rate": "0.6"}, "Link parameter rate=0.6: Noise rate η must be in [0, 0.45]"),
])
def test_a_bad_link_shows_the_form_with_one_line_never_a_traceback(client, query, note):
    at = app(query).run()
    assert not at.exception
    notes = [plain(w.value) for w in at.warning if "Link parameter" in w.value]
    assert len(notes) == 1 and notes[0].startswith(note)
    assert not at.error and not button(at, "Launch").disabled  # the form it shows can launch
    if "rate" in query:
        assert at.slider(key="launch_noise_rate").value == at.slider(key="launch_noise_rate").max < 0.9


def test_every_loss_is_offered_and_sce_launches_with_its_own_parameters(client):
    from gce_core.losses import LOSSES

    at = app().run()
    assert at.pills(key="launch_losses").options == [loss.label for loss in LOSSES.values()]
    at.pills(key="launch_losses").set_value(["lq", "sce"]).run()
    at.number_input(key="launch_sce.alpha").set_value(0.5).run()
    assert at.number_input(key="launch_sce.beta").value == 1.0
    assert at.query_params["sce.alpha"] in ("0.5", ["0.5"])
    button(at, "Launch").click().run()
    no_errors(at)
    runs = {r.spec.loss: r.spec for r in client.list_runs()}
    assert (runs["sce"].alpha, runs["sce"].beta, runs["sce"].A) == (0.5, 1.0, -4.0) and runs["lq"].q == 0.7
    assert "Queued 2 run(s)" in at.success[0].value


def test_a_sweep_over_q_is_one_group(client):
    at = app({"losses": "cce,lq", "seeds": "2"}).run()
    at.selectbox(key="launch_sweep").set_value("q").run()
    at.text_input(key="launch_sweep_values").input("0.1, 0.4, 0.7, 1.0").run()
    assert {m.label: m.value for m in at.metric}["Runs"] == str(2 + 4 * 2)
    assert any("CCE takes no q" in w.value for w in at.warning)
    button(at, "Launch").click().run()
    no_errors(at)
    runs = client.list_runs()
    assert len({r.group for r in runs}) == 1 and all(r.tags == ("sweep q",) for r in runs)
    assert sorted(r.spec.q for r in runs if r.spec.loss == "lq") == [0.1, 0.1, 0.4, 0.4, 0.7, 0.7, 1.0, 1.0]


def test_class_dependent_rate_stops_below_a_half(client):
    at = app({"rate": "0.6"}).run()
    at.selectbox(key="launch_noise").set_value("class_dependent").run()
    slider = at.slider(key="launch_noise_rate")
    assert slider.max == 0.45 and slider.value == 0.45
    assert any("Noise rate η lowered from 0.6 to 0.45" in i.value for i in at.info)
    no_errors(at)


def test_paper_preset_fills_the_form_and_the_data_check_refuses_missing_data(client, tmp_path, monkeypatch):
    monkeypatch.setenv("GCE_LAB_DATA", str(tmp_path))
    at = app().run()
    at.selectbox(key="launch_preset").set_value("paper").run()
    at.selectbox(key="launch_dataset").set_value("cifar100").run()
    assert at.selectbox(key="launch_model").value == "resnet34"
    assert at.number_input(key="launch_epochs").value == 150
    assert at.text_input(key="launch_lr_milestones").value == "80, 120"
    assert {m.label: m.value for m in at.metric}["Runs"] == "15"
    at.number_input(key="launch_epochs").set_value(15).run()  # the schedule keeps its fractions
    assert at.text_input(key="launch_lr_milestones").value == "8, 12"
    assert at.number_input(key="launch_prune_start").value == 8
    missing = [plain(e.value) for e in at.error]
    assert len(missing) == 1 and "'cifar100' was not found" in missing[0] and "How to get it" in missing[0]
    assert button(at, "Launch").disabled
    assert client.count_runs() == 0


def test_a_launch_longer_than_an_hour_asks_first(client):
    at = app({"epochs": "1000", "bs": "1"}).run()  # about 1.4 h a run on one CPU slot
    button(at, "Launch").click().run()
    assert client.count_runs() == 0
    assert any("Queue them anyway?" in w.value for w in at.warning)
    button(at, "Yes, queue them").click().run()
    no_errors(at)
    assert client.count_runs() == 3 and "Queued 3 run(s)" in at.success[0].value


def test_the_labs_epoch_limit_is_said_before_launch(client, monkeypatch):
    monkeypatch.setenv("GCE_LAB_MAX_EPOCHS", "100")
    at = app({"epochs": "150"}).run()
    assert any(plain(e.value).startswith("Epochs: 150 is over this lab's limit of 100") for e in at.error)
    assert button(at, "Launch").disabled


def test_session_cap_is_said_before_launch(client, monkeypatch):
    monkeypatch.setenv("GCE_LAB_SESSION_CAP", "4")
    at = app().run()
    button(at, "Launch").click().run()
    assert client.count_runs() == 3
    at.number_input(key="launch_epochs").set_value(30).run()
    assert any(plain(e.value).startswith("2 run(s) over your cap") for e in at.error)
    assert button(at, "Launch").disabled
    assert client.count_runs() == 3


def test_teaching_mode_hides_advanced_controls(client):
    at = app({"teach": "1"}).run()
    no_errors(at)
    assert at.title[0].value.startswith("Lesson")  # the first screen in teaching mode
    at = page(at, "views/launch.py", {"teach": "1"})
    no_errors(at)
    assert not any(e.label.startswith("Advanced") for e in at.expander)
    assert at.selectbox(key="launch_preset").options == ["quick"]
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
    spec, datasets = vega_charts(at)[0]
    assert spec["title"]["text"] == "test accuracy: mean ± std over runs"
    assert spec["title"]["subtitle"].startswith("6 runs: digits")  # what the chart shows, in a saved PNG too
    mean = next(ly for ly in spec["vconcat"][0]["layer"] if ly["mark"]["type"] == "line" and "detail" not in ly["encoding"])
    color = mean["encoding"]["color"]
    assert color["scale"]["domain"] == ["CCE (n=2)", "MAE (n=2)", "Lq q=0.7 (n=2)"]
    bands = datasets["bands"]
    assert bands[bands["kind"] == "band"].groupby("line")["epoch"].max().to_dict() == {g: 6 for g in color["scale"]["domain"]}
    assert bands[bands["kind"] == "run"]["run"].nunique() == 6  # a thin line per run
    summary = at.dataframe[0].value.set_index("group")
    assert list(summary["runs"]) == [2, 2, 2]
    assert " ± " in summary.loc["CCE", "test acc @ best val (%)"]
    diff = at.dataframe[1].value
    assert sorted(diff.columns) == ["loss", "q", "seed"]  # q is Lq's parameter: CCE runs hold none
    at.selectbox(key="compare_metric").set_value("memorised").run()
    at.selectbox(key="compare_by").set_value("run").run()
    no_errors(at)
    spec, _ = vega_charts(at)[0]
    assert "memorised" in spec["vconcat"][0]["layer"][0]["encoding"]["y"]["title"]
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
    assert "DatasetNotFoundError: boom" in plain(at.error[0].value)  # one paragraph, no details to fold
