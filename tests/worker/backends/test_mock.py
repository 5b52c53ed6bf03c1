"""The mock backend's options (``--mock``), as the fault and pipe tests write them."""

from __future__ import annotations

import pytest

from rpcworker.backends.mock import MockOptions


def test_mock_options_parse() -> None:
    opts = MockOptions.parse("step_delay=0.5,oom_once=reconstruct+load,noisy,view_size=32")
    assert opts.step_delay == 0.5 and opts.oom_once == {"reconstruct", "load"} and opts.noisy and opts.view_size == 32
    with pytest.raises(ValueError, match="unknown mock option"):
        MockOptions.parse("nope=1")
