"""The batch file: one format for the three jobs, read and checked before any work starts.

JSON lines (``.jsonl`` / ``.json``), one entry per line (blank lines and lines starting with ``#``
are skipped)::

    {"kind": "text3d", "prompt": "a red teapot", "params": {"steps": 2000, "seed": 1}}
    {"kind": "texture", "mesh": "meshes/chair.glb", "prompt": "an oak chair", "params": {"steps": 500}}
    {"kind": "gaussians", "data": "scenes/kitchen", "params": {"steps": 7000}}

YAML (``.yaml`` / ``.yml``, when PyYAML is installed): a list of the same entries, or a mapping
with an ``entries`` list. A prompt-per-line text file (any other suffix) is today's text-to-3D
batch: every line a ``text3d`` entry with the command line's settings.

``params`` are the kind's job parameters, exactly those of a job.json (``radiantforge.jobs``);
``mesh`` and ``data`` are paths relative to the batch file's folder (or absolute). An entry's
result folder is named after its content: kind, inputs and parameters, hashed; so editing or
reordering the file keeps finished work, and changing an entry's parameters makes it a new entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import InputError, quoted, shorten
from ..jobs import JOB_KINDS, _build_config
from ..text3d.batch import prompt_folder_name, read_prompts

JSON_LINES_SUFFIXES = (".jsonl", ".json", ".ndjson")
YAML_SUFFIXES = (".yaml", ".yml")
COMMENT_PREFIX = "#"
# A batch file holds entries and their parameters: anything larger is not one.
MAX_BATCH_FILE_BYTES = 16 << 20
MAX_ENTRIES = 100_000
# Characters of the entry's words kept in a folder name, and hex digits of its content's hash.
FOLDER_WORD_CHARS = 40
FOLDER_HASH_CHARS = 10
GUIDED_KINDS = ("text3d", "texture")
# The fields an entry of each kind has besides "kind", "params" and "name"; each required.
INPUT_FIELDS = {"text3d": ("prompt",), "texture": ("mesh", "prompt"), "gaussians": ("data",)}
PATH_FIELDS = ("mesh", "data")
OPTIONAL_FIELDS = ("params", "name")


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """One entry of a batch, checked: what a worker needs to run it, and nothing of this process.

    kind: a job kind (``radiantforge.jobs.JOB_KINDS``). prompt: the guided jobs' prompt (else None).
    inputs: "mesh" / "data" -> absolute path. params: the job parameters as written (prompt excluded).
    folder: the result folder's name under the batch's output folder. where: "file:line" for messages.
    label: what the summary shows (the entry's name, prompt or input).
    """

    kind: str
    prompt: str | None
    inputs: dict[str, str]
    params: dict[str, Any]
    folder: str
    where: str
    label: str

    @property
    def model(self) -> str | None:
        """The guidance model a guided entry loads (its ``model`` parameter or the config's default)."""
        return self.config().model if self.kind in GUIDED_KINDS else None

    def config(self, overrides: dict[str, Any] | None = None):
        """The kind's config of this entry (parameters, prompt, then ``overrides`` such as the device)."""
        params = dict(self.params)
        if self.prompt is not None:
            params["prompt"] = self.prompt
        return _build_config(self.kind, params, self.where, overrides)


def content_folder_name(kind: str, words: str, content: dict[str, Any]) -> str:
    """``<kind>_<words>_<hash>``: readable, and the same for the same content wherever it sits in the file."""
    text = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")[:FOLDER_WORD_CHARS].rstrip("_") or "entry"
    digest = hashlib.sha1(json.dumps(content, sort_keys=True, ensure_ascii=True).encode("utf-8")).hexdigest()
    return f"{kind}_{text}_{digest[:FOLDER_HASH_CHARS]}"


def read_batch(batch_file: str | os.PathLike, *, text_params: dict[str, Any] | None = None,
               check_models: bool = True) -> list[BatchItem]:
    """The checked entries of ``batch_file`` in file order, without repeats (see the module docstring).

    text_params: the parameters every entry of a prompt-per-line text file gets (the command line's).
    check_models: refuse a guided entry whose model is not on this machine (off when the caller
        brings its own guidance loader).
    Raises InputError naming the file, the line (or entry) and the field.
    """
    path = Path(batch_file)
    if not path.is_file():
        raise InputError("no such batch file (expected JSON lines, YAML, or a text file with one prompt per line)",
                         file=path)
    if path.stat().st_size > MAX_BATCH_FILE_BYTES:
        raise InputError(f"larger than {MAX_BATCH_FILE_BYTES:,} bytes; a batch file lists entries", file=path)
    suffix = path.suffix.lower()
    if suffix in JSON_LINES_SUFFIXES:
        raw_entries = _json_lines(path)
    elif suffix in YAML_SUFFIXES:
        raw_entries = _yaml_entries(path)
    else:
        return _prompt_lines(path, text_params or {}, check_models)
    if not raw_entries:
        raise InputError("holds no entries", file=path)
    if len(raw_entries) > MAX_ENTRIES:
        raise InputError(f"holds {len(raw_entries):,} entries; at most {MAX_ENTRIES:,} per batch", file=path)
    items, seen = [], set()
    for where, raw in raw_entries:
        item = _check_entry(raw, where, path.parent, check_models)
        if item.folder not in seen:  # an entry given twice is run once
            seen.add(item.folder)
            items.append(item)
    return items


def _json_lines(path: Path) -> list[tuple[str, Any]]:
    text = _read_text(path)
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENT_PREFIX):
            continue
        try:
            entries.append((f"{path}:{number}", json.loads(stripped)))
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON (column {exc.colno}): {exc.msg}", file=f"{path}:{number}") from None
        except RecursionError:
            raise InputError("not valid JSON: nested too deeply", file=f"{path}:{number}") from None
    return entries


def _yaml_entries(path: Path) -> list[tuple[str, Any]]:
    try:
        import yaml
    except ImportError:
        raise InputError("a YAML batch file needs PyYAML (pip install pyyaml); or write the entries as JSON lines "
                         "(.jsonl)", file=path) from None
    try:
        document = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {shorten(str(exc), 200)}", file=path) from None
    if isinstance(document, dict) and set(document) == {"entries"}:
        document = document["entries"]
    if not isinstance(document, list):
        raise InputError("expected a list of entries (or a mapping with an 'entries' list)", file=path)
    return [(f"{path}: entries[{index}]", raw) for index, raw in enumerate(document)]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=path) from None


def _check_entry(raw: Any, where: str, base_dir: Path, check_models: bool) -> BatchItem:
    if not isinstance(raw, dict):
        raise InputError(f"expected an object with a kind, got {quoted(raw)}", file=where)
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in INPUT_FIELDS or kind not in JOB_KINDS:
        raise InputError(f"unknown job kind {quoted(kind)}; known kinds: {', '.join(sorted(INPUT_FIELDS))}",
                         file=where, field="kind")
    allowed = ("kind", *INPUT_FIELDS[kind], *OPTIONAL_FIELDS)
    for name in raw:
        if name not in allowed:
            hint = " (job parameters go in params)" if name not in ("mesh", "data", "prompt") else ""
            raise InputError(f"not a field of a {kind} entry{hint}; its fields: {', '.join(allowed)}", file=where,
                             field=shorten(str(name)))
    for name in INPUT_FIELDS[kind]:
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise InputError(f"missing; a {kind} entry needs {' and '.join(INPUT_FIELDS[kind])}", file=where,
                             field=name)
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise InputError("expected an object of parameter names to values", file=where, field="params")
    if "prompt" in params:
        raise InputError("give the prompt as the entry's own prompt field", file=where, field="params.prompt")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise InputError(f"expected a string, got {quoted(name)}", file=where, field="name")

    prompt = " ".join(raw["prompt"].split()) if "prompt" in raw else None
    inputs, written = {}, {}
    for field in PATH_FIELDS:
        if field in raw:
            written[field] = Path(raw[field]).as_posix()
            inputs[field] = str((base_dir / raw[field]).resolve())
    params = _resolve_model_path(params, base_dir)
    content = {"kind": kind, "prompt": prompt, **written, "params": params}
    words = name or prompt or Path(written.get("mesh") or written.get("data")).stem
    folder = content_folder_name(kind, words, content)
    item = BatchItem(kind, prompt, inputs, params, folder, where, name or prompt or written.get("data", ""))
    if kind == "texture" and name is None:
        item = dataclasses.replace(item, label=f"{prompt} ({written['mesh']})")
    config = item.config()  # every parameter checked, named as the line names it (params.<name>)
    _check_inputs(item, config, where, check_models)
    return item


def _resolve_model_path(params: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A ``model`` naming a folder beside the batch file becomes that folder (else it is a model name or id)."""
    model = params.get("model")
    if isinstance(model, str) and model and (base_dir / model).is_dir():
        return {**params, "model": str((base_dir / model).resolve())}
    return params


def _check_inputs(item: BatchItem, config, where: str, check_models: bool) -> None:
    """What can be checked from headers before work starts: the mesh file, the dataset, the model."""
    from ..mesh.io import MESH_SUFFIXES

    try:
        if item.kind == "texture":
            mesh = Path(item.inputs["mesh"])
            if not mesh.is_file():
                raise InputError("no such mesh file", file=mesh, field="mesh")
            if mesh.suffix.lower() not in MESH_SUFFIXES:
                raise InputError(f"not a mesh file; expected one of {', '.join(MESH_SUFFIXES)}", file=mesh,
                                 field="mesh")
        elif item.kind == "gaussians":
            from ..data.transforms import check_nerf_dataset

            check_nerf_dataset(Path(item.inputs["data"]), downscale=config.downscale, background=config.background)
        if check_models and item.kind in GUIDED_KINDS:
            from ..guidance import resolve_model_folder

            resolve_model_folder(config.model)
    except InputError as exc:
        field = exc.field or next(iter(item.inputs), None)
        if exc.field == "model":
            field = "params.model"
        file = f"{where} ({exc.file})" if exc.file else where
        raise InputError(exc.problem, file=file, field=field) from None


def _prompt_lines(path: Path, text_params: dict[str, Any], check_models: bool) -> list[BatchItem]:
    """Today's prompts file: text3d entries in today's folders (the prompt's words and hash)."""
    items = []
    for number, prompt in enumerate(read_prompts(path), start=1):
        item = BatchItem("text3d", prompt, {}, dict(text_params), prompt_folder_name(prompt), f"{path}: prompt {number}",
                         prompt)
        config = item.config()
        _check_inputs(item, config, item.where, check_models and number == 1)  # one model for the whole file
        items.append(item)
    return items
