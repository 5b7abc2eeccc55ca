import json

import pytest

from radiantforge.errors import InputError
from radiantforge.events import EventLog, read_events
from radiantforge.jobs import job_state, read_job_spec, run_job, validate_job, write_job


def test_write_and_read_job(tmp_path):
    write_job(tmp_path / "job", "gaussians", {"iters": 10, "background": [0, 0, 0]})
    spec = read_job_spec(tmp_path / "job")
    assert spec.kind == "gaussians" and spec.params["iters"] == 10
    assert (tmp_path / "job" / "data").is_dir()
    with pytest.raises(InputError, match="already exists"):
        write_job(tmp_path / "job", "gaussians", {})


@pytest.mark.parametrize(
    "content, field, words",
    [
        ('{"kind": "gaussians", "params": {', None, "line 1"),
        ('[1, 2]', None, "JSON object"),
        ('{"kind": "teapot"}', "kind", "unknown job kind"),
        ('{"kind": "gaussians", "format_version": 7}', "format_version", "unsupported"),
        ('{"kind": "gaussians", "params": []}', "params", "object"),
        ('{"kind": "gaussians", "params": {"colour": 1}}', "params.colour", "unknown parameter"),
        ('{"kind": "gaussians", "params": {"iters": -5}}', "params.iters", "iters"),
        ('{"kind": "gaussians", "params": {"background": "red"}}', "params.background", "background"),
    ],
)
def test_bad_job_files_name_the_field(tmp_path, content, field, words):
    (tmp_path / "job.json").write_text(content)
    with pytest.raises(InputError) as info:
        read_job_spec(tmp_path)
    message = str(info.value)
    assert "job.json" in message and words in message
    if field is not None:
        assert info.value.field == field


def test_missing_job_file_and_data(tmp_path):
    with pytest.raises(InputError, match="job.json"):
        validate_job(tmp_path)
    write_job(tmp_path / "job", "gaussians", {})
    with pytest.raises(InputError, match="transforms"):
        validate_job(tmp_path / "job")


def test_run_job_reports_bad_input_as_an_event_not_a_traceback(tmp_path):
    job = write_job(tmp_path / "job", "gaussians", {"iters": 5})
    outcome = run_job(job)
    assert outcome["state"] == "failed" and "transforms" in outcome["error"]
    events = read_events(job / "events.jsonl")
    assert events[-1]["type"] == "error" and events[-1]["stage"] == "validation"
    assert "Traceback" not in json.dumps(events)
    assert job_state(job) == "failed"


def test_terminal_echo_shows_messages_and_progress(tmp_path, capsys):
    """What a CLI user sees: info and warning messages (e.g. a first-run kernel compile) and a progress bar."""
    log = EventLog(tmp_path / "events.jsonl", echo=True)
    log.emit("info", message="preparing the native CPU rasterizer")
    log.emit("warning", message="careful")
    log.emit("progress", step=5, total=10, loss=0.25)
    err = capsys.readouterr().err
    assert "preparing the native CPU rasterizer" in err and "warning: careful" in err and "5/10" in err
    assert [e["type"] for e in read_events(tmp_path / "events.jsonl")] == ["info", "warning", "progress"]


def test_old_parameter_names_are_aliases_and_the_config_is_built_once_with_overrides(tmp_path):
    """job.json files of earlier releases say "iters"; the step count is "steps" everywhere now."""
    write_job(tmp_path / "old", "gaussians", {"iters": 12})
    spec = read_job_spec(tmp_path / "old", overrides={"device": "cpu"})
    assert spec.params == {"iters": 12}  # as written
    assert spec.config.steps == 12 and spec.config.device == "cpu"

    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "job.json").write_text(json.dumps({"kind": "gaussians", "params": {"iters": 5, "steps": 6}}))
    with pytest.raises(InputError, match="given twice, as iters and as steps") as info:
        read_job_spec(tmp_path / "both")
    assert info.value.field == "params.steps"
    with pytest.raises(InputError) as info:  # a bad override is named as a parameter too
        read_job_spec(tmp_path / "old", overrides={"device": "tpu"})
    assert info.value.field == "params.device"


def test_each_job_kind_is_one_registry_entry(tmp_path):
    from radiantforge import jobs
    from radiantforge.gaussians.config import GaussianTrainConfig
    from radiantforge.text3d.config import Text3DConfig
    from radiantforge.texture.config import TextureConfig

    assert sorted(jobs.JOB_KINDS) == ["gaussians", "text3d", "texture"]
    types = {name: jobs.job_kind(name).config_type for name in jobs.JOB_KINDS}
    assert types == {"gaussians": GaussianTrainConfig, "texture": TextureConfig, "text3d": Text3DConfig}
    files = {jobs.checkpoint_file(tmp_path, name).name for name in jobs.JOB_KINDS}
    assert len(files) == 3, "two kinds would share a checkpoint"
    assert [name for name in jobs.JOB_KINDS if jobs.job_kind(name).reads_data] == ["gaussians", "texture"]
