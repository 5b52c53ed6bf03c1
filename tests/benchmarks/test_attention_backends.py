"""The attention benchmark's shapes are the step's (the benchmark itself needs a CUDA GPU)."""

from __future__ import annotations

from benchmarks.attention_backends import step_shapes


def test_the_main_pass_attends_to_the_views_and_the_512_condition() -> None:
    """At the top level 9600 view tokens attend to themselves and the 64 x 64 reference tokens: 13 696 keys, the
    largest call the H200's profile of the compiled step found."""
    shapes = step_shapes()
    assert shapes[:2] == [(5, 4096, 4096, 5), (5, 9600, 13_696, 5)]
    assert len(shapes) == 8 and sum(layers for *_, layers in shapes) == 2 * 16
