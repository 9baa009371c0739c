"""AppTest of the Noise insight gallery: the flipped images of a real (short) run, sorted and
filtered, from the epoch rows its training recorded."""

from __future__ import annotations

import time

from gce_core.experiment_data import GALLERY_SIZE, gallery_samples
from gce_core.spec import from_preset
from gce_core.train import train
from tests.test_app_pages import app, client, no_errors, page  # noqa: F401 (client is a fixture)


def train_for_real(client, spec) -> str:  # noqa: F811
    """Submit ``spec`` and play worker with the real trainer, so the rows hold the real gallery."""
    run_id = client.submit(spec)
    run = client.store.claim(worker_id="test", host="test", device="cpu", now=time.time())
    summary = train(run.spec, on_epoch=lambda row: client.store.add_epoch(run.id, run.claim_token, row, now=time.time()))
    client.store.complete(run.id, run.claim_token, {k: summary[k] for k in ("test_acc_at_best_val", "best_val_epoch",
                                                                            "last_test_acc", "best_test_acc")}, now=time.time())
    return run_id


def gallery_frame(at):
    frames = [df for df in at.dataframe if "f_y over epochs" in df.value.columns]
    assert len(frames) == 1
    return frames[0].value


def test_gallery_shows_the_runs_flipped_images_with_their_labels(client):  # noqa: F811
    spec = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=3, loss="truncated_lq",
                       prune_start=2, prune_every=1)
    run_id = train_for_real(client, spec)
    at = page(app(), "views/insight.py", {"run": run_id, "epoch": "2"})
    no_errors(at)
    frame = gallery_frame(at)
    assert len(frame) == GALLERY_SIZE
    assert frame["image"].str.startswith("data:image/png;base64,").all()
    assert (frame["given"] != frame["true"]).all()
    g = gallery_samples(spec)
    rows = client.metrics(run_id)
    # default order: f_y at the shown epoch, highest first; values are epoch 2's
    assert list(frame["f_y"]) == sorted(rows[1]["fy_gallery"], reverse=True)
    assert all(len(v) == 2 for v in frame["f_y over epochs"])
    names = g.class_names
    expected = sorted((fy, names[given], names[true], given == pred) for fy, given, true, pred in zip(
        rows[1]["fy_gallery"], g.given.tolist(), g.true.tolist(), rows[1]["pred_gallery"], strict=True))
    shown = sorted(zip(frame["f_y"], frame["given"], frame["true"], frame["memorised"], strict=True))
    assert shown == expected
    assert "kept" in frame.columns and frame["kept"].dtype == bool
    at.selectbox(key="insight_order").set_value("given label").run()
    assert list(gallery_frame(at)["given"]) == sorted(gallery_frame(at)["given"])


def test_gallery_explains_rows_without_one(client):  # noqa: F811
    from tests.app_helpers import train_queued

    run_id = client.submit(from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=2, loss="cce"))
    train_queued(client)  # fake rows, as an older lab stored them: no gallery
    at = page(app(), "views/insight.py", {"run": run_id})
    no_errors(at)
    assert any("records no gallery" in i.value for i in at.info)
