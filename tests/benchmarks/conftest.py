"""The benchmark tests that run on the tiny Zero123++ pipeline use the model tests' fixtures."""

from tests.models.conftest import one_thread, tiny_pipe  # noqa: F401 - the tiny pipeline, on one CPU thread
