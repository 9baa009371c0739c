"""AppTest tests of the Lesson and Sweep pages, and of Compare's grouping, filters and export,
against a real store in a temporary folder (no browser)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from gce_core.lesson import get_step, steps
from gce_core.spec import from_preset
from jobs import lesson as jl
from jobs.client import LabClient
from jobs.status import RunStatus
from tests.app_helpers import assert_titled, chart_specs, train_queued, values, vega_charts
from tests.test_app_pages import app, no_errors, page, plain


@pytest.fixture
def client(lab_home) -> LabClient:
    """A real store in tmp_path, the page served on loopback (as in test_app_pages)."""
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")
    return LabClient()


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


# --- Lesson -------------------------------------------------------------------------------------
def test_teaching_mode_opens_on_the_lesson(client, monkeypatch):
    monkeypatch.setenv("GCE_LAB_TEACHING", "1")
    at = app().run()
    no_errors(at)
    assert at.title[0].value == "Lesson: learning from noisy labels"
    assert "Step 1 of 5" in at.header[0].value


def test_a_step_reveals_stored_runs_at_once_without_launching(client):
    step = get_step("mae")
    client.submit_group(list(step.specs), group="earlier")
    train_queued(client, epochs=4)
    at = page(app(), "views/lesson.py", {"step": "2"})
    no_errors(at)
    assert "Step 2 of 5: MAE resists" in at.header[0].value
    assert button(at, "Reveal the results").disabled  # predict first
    at.radio(key="lesson_pick_mae").set_value(0).run()
    button(at, "Reveal the results").click().run()
    no_errors(at)
    assert "Not quite" in at.warning[0].value
    assert client.count_runs() == len(step.specs)  # nothing launched: the store had them
    figs = chart_specs(at)
    assert len(figs) == 2  # test accuracy and memorisation
    for fig in figs:
        assert_titled(fig)
    names = [t["name"] for t in figs[0]["data"] if t.get("showlegend") is not False]
    assert names == ["CCE (n=2)", "MAE (n=2)"]
    assert at.query_params["step"] in ("2", ["2"])


def test_a_step_without_runs_launches_them_and_shows_them_growing(client):
    at = page(app(), "views/lesson.py", {"step": "5"})
    at.radio(key="lesson_pick_truncate").set_value(0).run()
    button(at, "Reveal the results").click().run()
    no_errors(at)
    assert "Right" in at.success[0].value
    step = get_step("truncate")
    queued = client.list_runs(group=step.group)
    assert len(queued) == len(step.specs) and {r.status for r in queued} == {RunStatus.QUEUED}
    assert all("lesson" in r.tags for r in queued)
    assert "launched 4 small runs" in at.info[0].value
    train_queued(client, epochs=3, complete=False)  # the worker is half way
    at.run()
    no_errors(at)
    assert client.count_runs() == len(step.specs)  # launched once, not at every rerun
    assert "still training" in at.get("progress")[0].proto.text
    assert chart_specs(at)


def test_the_sweep_step_plots_accuracy_against_q(client):
    jl.prepare(client, get_step("lq"))
    train_queued(client, epochs=4)
    at = page(app(), "views/lesson.py", {"step": "3"})
    at.radio(key="lesson_pick_lq").set_value(1).run()
    button(at, "Reveal the results").click().run()
    no_errors(at)
    fig = chart_specs(at)[0]
    assert_titled(fig)
    lq = next(t for t in fig["data"] if t.get("name", "").startswith("Lq"))
    assert values(lq, "x") == [0.1, 0.4, 0.7, 1.0]
    assert "n=2" in lq["name"]


def test_prepare_reuses_runs_the_lab_has():
    step = get_step("mae")
    assert len(step.specs) == 4 and {s.seed for s in step.specs} == {0, 1}
    all_keys = [s.key for s in steps()]
    assert all_keys == ["memorise", "mae", "lq", "bounds", "truncate"]


def test_prepare_command_queues_missing_runs_once(client, capsys):
    from jobs.cli import main

    quick = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=40, loss="cce", name="my demo")
    client.submit(quick)  # the quick demo's CCE run counts for the lesson, whatever its name
    assert main(["lesson", "mae", "--prepare"]) == 0
    out = capsys.readouterr().out
    assert "step 2 mae" in out and "3 queued now" in out
    assert main(["lesson", "mae", "--prepare"]) == 0
    assert "4 on the way" in capsys.readouterr().out
    assert client.count_runs() == 4
    assert main(["lesson", "nope"]) == 2
    assert "allowed: memorise, mae" in capsys.readouterr().err


# --- Sweep --------------------------------------------------------------------------------------
def submit_q_sweep(client, qs=(0.3, 0.7, 1.0), seeds=(0, 1)):
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=4)
    specs = [base.with_loss("lq", q=q, seed=s) for q in qs for s in seeds] + [base.with_loss("cce", seed=s) for s in seeds]
    return client.submit_group(specs, group="q sweep")


def test_sweep_page_plots_the_summary_against_q_with_error_bars_and_the_bound(client):
    group, _ = submit_q_sweep(client)
    train_queued(client)
    at = page(app(), "views/sweep.py")
    no_errors(at)
    assert at.selectbox(key="sweep_group").value == group  # the newest sweep by default
    fig = chart_specs(at)[0]
    assert_titled(fig)
    assert fig["layout"]["xaxis"]["title"]["text"] == "q (exponent of Lq)"
    lq = next(t for t in fig["data"] if t.get("name", "").startswith("Lq"))
    assert lq["name"] == "Lq (n=2)"
    assert values(lq, "x") == [0.3, 0.7, 1.0]
    assert lq["error_y"]["visible"]
    cce = next(t for t in fig["data"] if t.get("name", "").startswith("CCE"))
    assert "no q" in cce["name"] and cce["line"]["dash"] == "dash"
    bound = next(t for t in fig["data"] if t.get("yaxis") == "y2")
    ys = values(bound)
    assert ys[0] > ys[-1] >= 0  # A falls with q
    table = at.dataframe[0].value
    assert list(table["runs (n)"]) == [2, 2, 2, 2]
    assert at.query_params["group"] in (group, [group])


def test_sweep_page_says_when_nothing_is_swept(client):
    client.submit_group([from_preset("quick", "digits", epochs=3, loss="cce", seed=s) for s in (0, 1)], group="seeds only")
    train_queued(client)
    at = page(app(), "views/sweep.py", {"group": "seeds only"})
    no_errors(at)
    assert "nothing is swept" in at.info[0].value


# --- Compare ------------------------------------------------------------------------------------
def test_compare_splits_noise_rates_into_panels_and_names_groups_by_configuration(client):
    base = from_preset("quick", "digits", noise="uniform", epochs=3)
    specs = [base.with_loss(loss, noise_rate=r, seed=s) for loss in ("cce", "lq") for r in (0.2, 0.4) for s in (0, 1)]
    group, _ = client.submit_group(specs)
    train_queued(client)
    at = page(app(), "views/compare.py", {"group": group, "by": "loss"})
    no_errors(at)
    assert "one panel per noise setting" in at.info[0].value
    spec, datasets = vega_charts(at)[0]
    detail = spec["vconcat"][0]
    assert detail["facet"]["sort"] == ["uniform 0.2", "uniform 0.4"]  # a panel per noise setting
    assert sorted(set(datasets["bands"]["panel"])) == ["uniform 0.2", "uniform 0.4"]
    assert _legend(spec) == ["CCE (n=2)", "Lq q=0.7 (n=2)"]
    assert "digits · mlp · 3 epochs" in spec["title"]["subtitle"]
    assert {ly["encoding"]["x"]["axis"]["tickMinStep"] for ly in detail["spec"]["layer"]} == {1}  # whole epochs
    options = at.selectbox(key="compare_group").options
    assert any(o.startswith("digits · mlp · 3 epochs · uniform 0.2-0.4 · CCE, Lq q=0.7 · 2 seeds") for o in options)
    table = at.dataframe[0].value
    assert list(table["noise"]) == ["uniform 0.2", "uniform 0.2", "uniform 0.4", "uniform 0.4"]


def _legend(spec: dict) -> list[str]:
    """The legend of Compare's band chart: its colour scale's domain."""
    detail = spec["vconcat"][0]
    layers = (detail["spec"] if "facet" in detail else detail)["layer"]
    (domain,) = {tuple(ly["encoding"]["color"]["scale"]["domain"]) for ly in layers if "color" in ly["encoding"]}
    return list(domain)


def test_a_link_filter_no_run_matches_is_left_out_with_a_note(client):
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=2)
    client.submit_group([base.with_loss(loss) for loss in ("cce", "lq")])
    train_queued(client)
    for view, prefix in (("views/compare.py", "compare_"), ("views/runs.py", "runs_")):
        at = page(app(), view, {"f.loss": "cce,nope", "f.dataset": "digits", "f.colour": "red"})
        no_errors(at)
        assert at.multiselect(key=prefix + "f_loss").value == ["cce"]
        notes = [i.value for i in at.info if "matches no run here" in i.value]
        assert notes == ["The link's filter loss = nope, colour = red matches no run here, so it was left out."]
        assert any(c.value.startswith("Showing 1 of 2 runs") for c in at.caption)


def test_compare_filters_by_spec_fields_and_says_how_many_it_shows(client):
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=3)
    client.submit_group([base.with_loss(loss) for loss in ("cce", "mae", "lq")])
    train_queued(client)
    at = page(app(), "views/compare.py", {"f.loss": "cce,mae"})
    no_errors(at)
    assert at.multiselect(key="compare_f_loss").value == ["cce", "mae"]
    assert any(c.value.startswith("Showing 2 of 3 runs") for c in at.caption)
    assert len(at.multiselect(key="compare_selected").options) == 3  # the default selection stays pickable
    assert any(c.value.startswith("1 of the 3 picked runs are hidden by the filters") for c in at.caption)
    assert _legend(vega_charts(at)[0][0]) == ["CCE (n=1)", "MAE (n=1)"]  # the chart compares what the filters show
    at.multiselect(key="compare_f_loss").set_value(["lq"]).run()
    assert any(c.value.startswith("Showing 1 of 3 runs") for c in at.caption)
    assert at.query_params["f.loss"] in ("lq", ["lq"])


def test_compare_csv_has_one_column_per_spec_field(client):
    from app import compare_logic as cl
    from gce_core.spec import RunSpec

    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=3, name="a, b")
    group, ids = client.submit_group([base.with_loss(loss) for loss in ("cce", "lq")])
    train_queued(client)
    records = client.list_runs(group=group)
    frame = pd.read_csv(io.StringIO(cl.wide_csv(records, client.metrics_frame(ids))))
    for field in RunSpec.model_fields:
        assert field in frame.columns
    assert len(frame) == 6  # 2 runs x 3 epochs
    assert set(frame["loss"]) == {"cce", "lq"} and set(frame["name"]) == {"a, b"}
    assert frame["test_acc"].notna().all() and frame["epoch_lr"].notna().all()


@pytest.mark.parametrize("error, expected", [
    ("training raised an error\n--- last lines of its log ---\nTraceback (most recent call last):\n  File \"x.py\"\n"
     "gce_core.data.DatasetNotFoundError: cifar10 is not in /data",
     "Training raised an error: DatasetNotFoundError (cifar10 is not in /data). The data set's files are not in the data folder"),
    ("its process was killed by SIGKILL (signal 9); gave up after 3 crashes", "killed from outside"),
])
def test_a_failed_run_reads_as_one_paragraph_with_the_traceback_folded(client, error, expected):
    run_id = client.submit(from_preset("quick", "digits", epochs=3, loss="cce"))
    run = client.store.claim(worker_id="test", host="test", device="cpu", now=0.0)
    client.store.finish(run.id, run.claim_token, RunStatus.FAILED, now=1.0, error=error)
    at = page(app(), "views/runs.py", {"runs": run_id})
    assert not at.exception
    assert expected in plain(at.error[0].value)
    if "Traceback" in error:
        assert "Traceback" not in at.error[0].value  # folded below, not in the paragraph
        assert any("the details" in e.label for e in at.expander)
        assert at.code[0].proto.wrap_lines


def test_the_step_buttons_move_through_the_lesson_and_the_url_follows(client):
    at = page(app(), "views/lesson.py", {"step": "1"})
    button(at, "Next step").click().run()
    no_errors(at)
    assert "Step 2 of 5" in at.header[0].value and at.query_params["step"] in ("2", ["2"])
    button(at, "5. Truncation").click().run()
    assert "Step 5 of 5" in at.header[0].value and at.query_params["step"] in ("5", ["5"])
    at = page(app(), "views/lesson.py", {"step": "9"})  # out of range: the first step
    no_errors(at)
    assert "Step 1 of 5" in at.header[0].value
