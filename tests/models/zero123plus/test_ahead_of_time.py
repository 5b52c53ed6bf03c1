"""AOTInductor packages of the compiled modules: built once per folder, loaded without tracing, bound to the
module's own weights, rebuilt when they fail their record. On the CPU (no CUDA graphs); each build is a real
AOTInductor compilation with the C++ compiler (seconds for the toy module, about a minute for the tiny step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instantmesh.zero123plus import ahead_of_time, package_files
from instantmesh.zero123plus.ahead_of_time import AheadOfTime, ahead_of_time_available, code_fingerprint
from instantmesh.zero123plus.package_files import loads_in_a_child, package_is_intact
from rpcworker.wire.cache import record_path

pytestmark = [
    pytest.mark.models,
    pytest.mark.upstream,
    pytest.mark.skipif(not ahead_of_time_available(), reason="this torch has no AOTInductor packages"),
]
CPU = torch.device("cpu")


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.linear = torch.nn.Linear(4, 2)
        self.register_buffer("offset", torch.full((2,), 0.5))

    def forward(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return self.linear(pooled) * scale + self.offset


@pytest.fixture()
def toy() -> tuple[Toy, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return Toy().eval(), (torch.randn(2, 3, 8, 8), torch.tensor(1.5))


def built_package(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], folder: Path) -> Path:
    """The toy's package, built by a first AheadOfTime call into `folder`."""
    compiled = AheadOfTime(module, folder, "toy", CPU)
    with torch.no_grad():
        compiled(*inputs)
    assert len(compiled.built) == 1
    return folder / compiled.built[0]


def test_a_package_is_built_once_and_uses_the_modules_own_weights(toy, tmp_path: Path) -> None:
    module, inputs = toy
    first = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad():
        expected = module(*inputs)
        assert torch.allclose(first(*inputs), expected, atol=1e-6)
    assert len(first.built) == 1 and (tmp_path / first.built[0]).is_file()
    second = AheadOfTime(module, tmp_path, "toy", CPU)  # a second start: loaded, not built
    with torch.no_grad():
        assert torch.allclose(second(*inputs), expected, atol=1e-6) and second.built == []
        module.linear.weight.mul_(-2)  # the package holds no copy of the weights: it reads the module's
        assert torch.allclose(second(*inputs), module(*inputs), atol=1e-6)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".pt2"]  # no partial file left behind
    phases = ["record", "load", "bind", "first_call"]
    assert sorted(first.seconds) == sorted(f"toy_package_{p}_s" for p in [*phases, "build", "load_check"])
    assert sorted(second.seconds) == sorted(f"toy_package_{p}_s" for p in phases)  # a second start builds nothing
    assert first.seconds["toy_package_build_s"] > first.seconds["toy_package_load_check_s"] > 0


def test_a_package_that_fails_its_record_is_built_again(toy, tmp_path: Path) -> None:
    module, inputs = toy
    package = built_package(module, inputs, tmp_path)
    assert package_is_intact(package)
    with package.open("r+b") as f:  # one byte changed: same size, another hash
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not package_is_intact(package)
    again = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad():
        assert torch.allclose(again(*inputs), module(*inputs), atol=1e-6)
    assert again.built == [package.name] and package_is_intact(package)
    record_path(package).unlink()  # no record: not trusted either
    assert not package_is_intact(package)


def test_a_package_that_does_not_load_runs_through_the_fallback_at_every_start(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, inputs = toy
    monkeypatch.setattr(package_files, "loads_in_a_child", lambda package, device: False)  # as a crash at load
    fallback_calls: list[int] = []

    def fallback() -> object:
        fallback_calls.append(1)
        return module

    first = AheadOfTime(module, tmp_path, "toy", CPU, fallback=fallback)
    with torch.no_grad():
        assert torch.allclose(first(*inputs), module(*inputs))
    assert len(first.built) == 1 and first.fell_back == first.built and fallback_calls == [1]  # made once
    second = AheadOfTime(module, tmp_path, "toy", CPU, fallback=fallback)
    with torch.no_grad():
        second(*inputs)
    assert second.built == [] and second.fell_back == first.built  # the verdict is kept in the record


def test_a_package_that_cannot_be_built_runs_through_the_fallback(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export or compilation error costs this start the fallback, never the worker; nothing is written, so the
    next start tries again."""
    module, inputs = toy

    def failing_build(*args: object) -> dict:
        raise RuntimeError("export failed")

    monkeypatch.setattr(ahead_of_time, "build_package", failing_build)
    compiled = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad():
        assert torch.allclose(compiled(*inputs), module(*inputs))
    assert compiled.built == [] and len(compiled.fell_back) == 1 and list(tmp_path.iterdir()) == []


def test_the_load_check_runs_a_real_load_in_a_child(toy, tmp_path: Path) -> None:
    module, inputs = toy
    package = built_package(module, inputs, tmp_path)
    assert loads_in_a_child(package, CPU)
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(package.read_bytes()[: package.stat().st_size // 2])  # truncated: the load fails
    assert not loads_in_a_child(broken, CPU)


def test_other_shapes_get_their_own_package(toy, tmp_path: Path) -> None:
    module, (image, scale) = toy
    compiled = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad():
        compiled(image, scale)
        wider = torch.randn(3, 3, 8, 8)
        assert torch.allclose(compiled(wider, scale), module(wider, scale), atol=1e-6)
    assert len(set(compiled.built)) == 2


def test_a_package_of_other_code_is_not_loaded(toy, tmp_path: Path) -> None:
    """Packages are named by the code's fingerprint too: after an upgrade (other library versions, other source)
    the module is built anew, never run from a package traced from the old code."""
    module, inputs = toy
    with torch.no_grad():
        first = AheadOfTime(module, tmp_path, "toy", CPU, fingerprint="diffusers 1, code a")
        first(*inputs)
        upgraded = AheadOfTime(module, tmp_path, "toy", CPU, fingerprint="diffusers 2, code a")
        upgraded(*inputs)
        again = AheadOfTime(module, tmp_path, "toy", CPU, fingerprint="diffusers 1, code a")
        again(*inputs)
    assert len(first.built) == len(upgraded.built) == 1 and first.built != upgraded.built and again.built == []


def test_the_code_fingerprint_follows_versions_and_sources(tmp_path: Path) -> None:
    source = tmp_path / "step.py"
    source.write_text("x = 1\n")
    before = code_fingerprint(["torch", "no-such-package"], [source])
    assert f"torch {torch.__version__.split('+')[0]}" in before and "no-such-package absent" in before
    source.write_text("x = 2\n")
    assert code_fingerprint(["torch", "no-such-package"], [source]) != before


def test_torch_without_packages_is_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    assert not ahead_of_time_available()
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    assert ahead_of_time_available()


def test_the_compile_option_uses_packages_on_cuda_with_a_torch_that_loads_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rpcworker.backends.views_compile import PACKAGES_FOLDER, compiled_ahead_of_time

    assert compiled_ahead_of_time(tmp_path, CPU) is None  # (the CPU refuses the option anyway)
    setup = compiled_ahead_of_time(tmp_path, torch.device("cuda"))
    assert setup is not None and setup.folder == tmp_path / PACKAGES_FOLDER and setup.cuda_graphs
    assert setup.fingerprint.startswith("diffusers ") and ", code " in setup.fingerprint
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    assert compiled_ahead_of_time(tmp_path, torch.device("cuda")) is None  # torch.compile, with its caches


class NoAttention(torch.nn.Module):
    """A stand-in UNet: no attention layer to record."""

    attn_processors: dict[str, object] = {}


def test_only_the_whole_step_under_torch_compile_gets_cuda_graph_tree_marks(tmp_path: Path) -> None:
    """The packaged step's two passes replay graphs of their own (a mark would import torch.compile's machinery for
    nothing), and their fallback is torch.compile without CUDA-graph trees; the whole step under torch.compile's
    reduce-overhead needs each step marked."""
    from instantmesh.zero123plus.overlapped_step import OverlappedStep
    from instantmesh.zero123plus.speed import AheadOfTimeSetup, CompiledStep

    packaged = CompiledStep(
        NoAttention(), torch.float32, "reduce-overhead", ahead=AheadOfTimeSetup(tmp_path, CPU, cuda_graphs=False)
    )
    assert isinstance(packaged.compiled, OverlappedStep) and set(packaged.compiled.parts) == {"reference", "main"}
    assert not packaged.mark_graph_steps
    assert CompiledStep(NoAttention(), torch.float32, "reduce-overhead").mark_graph_steps
