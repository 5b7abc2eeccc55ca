"""Batches of the three job kinds on this machine (radiantforge.batch, no Ray): the format checked up
front, every kind run with tiny models and the oracle, results keyed by content, re-runs skip,
interrupted entries resume to the same bytes as an uninterrupted run, one entry's failure is
reported once and the batch goes on. The mixed batch is tests/batch_helpers.py's."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from radiantforge import cli
from radiantforge.batch import read_batch, run_batch
from radiantforge.errors import InputError, JobCancelled
from radiantforge.events import EventLog, read_events

from batch_helpers import assert_same_results, oracle_loader, result_files, write_mixed_batch
from tiny_diffusion import build_tiny_stable_diffusion

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors; and the Ray workers run one thread each too
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "model").folder


@pytest.fixture(scope="module")
def straight_run(tiny_model, tmp_path_factory, shared_assets):
    """The mixed batch run once, uninterrupted: (batch file, output folder, report)."""
    root = tmp_path_factory.mktemp("straight")
    batch = write_mixed_batch(root / "batch", tiny_model)
    ray_loaded_before = "ray" in sys.modules
    report = run_batch(batch, root / "out", load_guidance=oracle_loader, events=EventLog(root / "events.jsonl"))
    if not ray_loaded_before:
        assert "ray" not in sys.modules  # the local path never imports Ray
    return batch, root / "out", report


def test_mixed_batch_runs_every_kind_once_and_a_rerun_skips_everything(straight_run):
    batch, out, report = straight_run
    assert [o.kind for o in report.outcomes] == ["text3d", "text3d", "texture", "gaussians"]
    assert [o.status for o in report.outcomes] == ["generated"] * 4, report.table
    assert report.model_loads == 2  # the tiny model once for text3d and texture, the oracle once
    for outcome in report.outcomes:
        manifest = json.loads((out / outcome.folder / "result.json").read_text())
        assert manifest["kind"] == outcome.kind
        events = read_events(out / f"{outcome.folder}.events.jsonl")
        assert [e["type"] for e in events if e["type"] in ("started", "finished")] == ["started", "finished"]
        assert any(e["type"] == "progress" for e in events)
    assert [o.steps for o in report.outcomes] == [4, 4, 3, 20]
    assert not list(out.glob(".*partial*"))
    written = {o.folder: (out / o.folder / "result.json").stat().st_mtime_ns for o in report.outcomes}

    again = run_batch(batch, out, load_guidance=oracle_loader)
    assert [o.status for o in again.outcomes] == ["skipped"] * 4 and again.model_loads == 0
    assert {o.folder: (out / o.folder / "result.json").stat().st_mtime_ns for o in again.outcomes} == written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["skipped"] == 4 and (out / "summary.md").read_text() == again.table


def test_folders_are_keyed_by_content_not_position(straight_run, tmp_path):
    batch, _, report = straight_run
    lines = batch.read_text().splitlines()
    reordered = batch.parent / "reordered.jsonl"
    reordered.write_text("\n".join([lines[0], *reversed(lines[1:]), lines[1]]) + "\n")  # and one entry twice
    items = read_batch(reordered, check_models=False)
    assert sorted(i.folder for i in items) == sorted(o.folder for o in report.outcomes)
    yaml_file = batch.parent / "batch.yaml"  # the same entries as YAML: the same folders
    yaml_file.write_text("entries:\n" + "".join(f"  - {line}\n" for line in lines[1:]))
    assert [i.folder for i in read_batch(yaml_file, check_models=False)] == [o.folder for o in report.outcomes]
    changed = batch.parent / "changed.jsonl"
    changed.write_text(lines[1].replace('"steps": 4', '"steps": 5') + "\n")
    assert read_batch(changed, check_models=False)[0].folder != report.outcomes[0].folder


def test_a_stopped_batch_resumes_to_the_bytes_of_an_uninterrupted_run(straight_run, tmp_path):
    batch, straight_out, straight = straight_run
    calls = []

    def stop_in_the_second_entry():  # polled once per step: 4 steps of the first entry, then 3 of the second
        calls.append(1)
        return len(calls) > 7

    out = tmp_path / "out"
    with pytest.raises(JobCancelled):
        run_batch(batch, out, load_guidance=oracle_loader, should_stop=stop_in_the_second_entry)
    summary = json.loads((out / "summary.json").read_text())
    assert [e["status"] for e in summary["entries"]] == ["generated", "cancelled", "pending", "pending"]
    assert not (out / straight.outcomes[1].folder).joinpath("result.json").exists()

    resumed = run_batch(batch, out, load_guidance=oracle_loader)
    assert [o.status for o in resumed.outcomes] == ["skipped", "resumed", "generated", "generated"]
    events = read_events(out / f"{straight.outcomes[1].folder}.events.jsonl")
    assert any(e.get("message") == "resuming from step 3 of 4" for e in events)
    assert_same_results(result_files(out, resumed.outcomes), result_files(straight_out, straight.outcomes))


def test_an_entry_that_fails_on_its_input_is_reported_once_and_the_batch_goes_on(straight_run, tmp_path):
    batch, _, _ = straight_run
    broken = batch.parent / "meshes" / "broken.obj"
    broken.write_text("v 0 0 0\nf 1 2 3\n")  # a face naming vertices that do not exist
    lines = batch.read_text().splitlines()
    texture = json.loads(lines[3])
    mixed = batch.parent / "with_broken.jsonl"
    mixed.write_text("\n".join([json.dumps({**texture, "mesh": "meshes/broken.obj"}), lines[4]]) + "\n")
    events_file = tmp_path / "batch.events.jsonl"
    report = run_batch(mixed, tmp_path / "out", load_guidance=oracle_loader, events=EventLog(events_file))
    assert [o.status for o in report.outcomes] == ["failed", "generated"]
    assert report.outcomes[0].error and "broken.obj" in report.table
    entry_errors = [e for e in read_events(tmp_path / "out" / f"{report.outcomes[0].folder}.events.jsonl")
                    if e["type"] == "error"]
    assert len(entry_errors) == 1
    warnings = [e for e in read_events(events_file) if e["type"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["entry"] == report.outcomes[0].folder


@pytest.mark.parametrize("line, field", [
    ('{"kind": "mesh2splat", "prompt": "x"}', "kind"),
    ('{"kind": "text3d"}', "prompt"),
    ('{"kind": "texture", "prompt": "a cow"}', "mesh"),
    ('{"kind": "texture", "prompt": "a cow", "mesh": "meshes/none.obj"}', "mesh"),
    ('{"kind": "gaussians", "data": "scenes/none"}', "data"),
    ('{"kind": "text3d", "prompt": "x", "steps": 5}', "steps"),
    ('{"kind": "text3d", "prompt": "x", "params": {"steps": 0}}', "params.steps"),
    ('{"kind": "text3d", "prompt": "x", "params": {"no_such": 1}}', "params.no_such"),
    ('{"kind": "gaussians", "data": "scenes/sphere", "params": {"sh_degree": 9}}', "params.sh_degree"),
    ('{"kind": "text3d", "prompt": "x", "params": {"model": "nowhere/not-cached"}}', "params.model"),
])
def test_bad_entries_name_their_line_and_field_before_any_work(straight_run, tmp_path, line, field):
    batch, _, _ = straight_run
    bad = batch.parent / "bad.jsonl"
    bad.write_text(batch.read_text().splitlines()[4] + "\n\n" + line + "\n")
    with pytest.raises(InputError) as error:
        run_batch(bad, tmp_path / "out")
    assert error.value.field == field and f"{bad}:3" in error.value.file
    assert not (tmp_path / "out").exists()
    not_json = batch.parent / "not_json.jsonl"
    not_json.write_text('{"kind": "text3d",\n')
    with pytest.raises(InputError, match=r"not_json.jsonl:1: not valid JSON"):
        read_batch(not_json)


def test_cli_runs_a_batch_file_and_refuses_prompt_options_for_it(straight_run, tmp_path, capsys):
    batch, _, _ = straight_run
    gaussians_only = batch.parent / "gaussians.jsonl"
    gaussians_only.write_text(batch.read_text().splitlines()[4] + "\n")
    out = tmp_path / "out"
    assert cli.main(["batch", str(gaussians_only), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| generated |") == 1 and "summary:" in printed
    assert (tmp_path / "out.events.jsonl").is_file()
    assert cli.main(["batch", str(gaussians_only), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("| skipped |") == 1
    assert cli.main(["batch", str(gaussians_only), "--out", str(out), "--steps", "3"]) == 2
    assert "steps" in capsys.readouterr().err
