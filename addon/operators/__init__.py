"""Operators (thin: the work is done by plain functions in pipeline, capture, importers and io; job operators share base.JobOperator)."""

from .backend import CLASSES as _BACKEND
from .batch import CLASSES as _BATCH
from .importing import CLASSES as _IMPORTING
from .jobs import CLASSES as _JOBS
from .originals import CLASSES as _ORIGINALS
from .render_setup import CLASSES as _RENDER_SETUP
from .text3d import CLASSES as _TEXT3D
from .texture import CLASSES as _TEXTURE

CLASSES = (*_BACKEND, *_JOBS, *_TEXTURE, *_TEXT3D, *_IMPORTING, *_ORIGINALS, *_RENDER_SETUP, *_BATCH)
