"""AOTInductor packages of the compiled modules: built once per folder, loaded without tracing, bound to the
module's own weights, rebuilt when they fail their record. On the CPU (no CUDA graphs); each build is a real
AOTInductor compilation with the C++ compiler (seconds for the toy module, about a minute for the tiny step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instantmesh.zero123plus.networks import ahead_of_time, package_files
from instantmesh.zero123plus.networks.ahead_of_time import (
    AheadOfTime,
    PackageUnavailable,
    ahead_of_time_available,
    code_fingerprint,
)
from instantmesh.zero123plus.networks.package_files import loads_in_a_child, package_is_intact
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


def test_a_package_that_does_not_load_is_refused_at_every_start(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's verdict is kept in the record: a later start refuses the package without building it again (the
    views then run without packages, all of them)."""
    module, inputs = toy
    monkeypatch.setattr(package_files, "loads_in_a_child", lambda package, device: False)  # as a crash at load
    first = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad(), pytest.raises(PackageUnavailable, match="does not load with this torch"):
        first(*inputs)
    assert len(first.built) == 1 and first.loaded == []
    second = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad(), pytest.raises(PackageUnavailable, match="does not load with this torch"):
        second(*inputs)
    assert second.built == []


def test_a_package_that_cannot_be_built_is_refused_and_nothing_is_written(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export or compilation error costs this start its packages, never the worker; nothing is written, so the
    next start tries again."""
    module, inputs = toy

    def failing_build(*args: object) -> dict:
        raise RuntimeError("export failed")

    monkeypatch.setattr(ahead_of_time, "build_package", failing_build)
    compiled = AheadOfTime(module, tmp_path, "toy", CPU)
    with torch.no_grad(), pytest.raises(PackageUnavailable, match="could not be built .RuntimeError: export failed"):
        compiled(*inputs)
    assert compiled.built == [] and list(tmp_path.iterdir()) == []


def test_without_a_module_a_missing_package_is_refused(toy, tmp_path: Path) -> None:
    module, inputs = toy
    bound = AheadOfTime(None, tmp_path, "toy", CPU, constants=ahead_of_time.module_tensors(module))
    with torch.no_grad(), pytest.raises(PackageUnavailable, match="no intact compiled package"):
        bound(*inputs)
    built_package(module, inputs, tmp_path)
    with torch.no_grad():  # once built (by a start with the module), the constants alone run it
        assert torch.allclose(bound(*inputs), module(*inputs), atol=1e-6)


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
    from instantmesh.zero123plus.networks.choice import compile_route
    from rpcworker.backends.views_compile import PACKAGES_FOLDER, compiled_ahead_of_time

    assert compiled_ahead_of_time(tmp_path, CPU) is None  # (the CPU refuses the option anyway)
    setup = compiled_ahead_of_time(tmp_path, torch.device("cuda"))
    assert setup is not None and setup.folder == tmp_path / PACKAGES_FOLDER and setup.cuda_graphs
    assert setup.fingerprint.startswith("diffusers ") and ", code " in setup.fingerprint
    assert compile_route() == "packaged"
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    assert compile_route() == "compiled"
    assert compiled_ahead_of_time(tmp_path, torch.device("cuda")) is None  # torch.compile, with its caches


def test_the_views_code_fingerprint_covers_the_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to the networks' code (the packages trace it) names other packages."""
    from rpcworker.backends import views_compile

    seen: list[list[Path]] = []
    monkeypatch.setattr(views_compile, "code_fingerprint", lambda packages, sources: seen.append(sources) or "")
    views_compile.views_code_fingerprint()
    names = {path.relative_to(path.parents[1]).as_posix() for path in seen[0]}
    assert {"zero123plus/reference_attention.py", "networks/eager.py", "networks/packaged.py"} <= names


class OneParameter(torch.nn.Module):
    """A stand-in UNet and VAE: one parameter (for the device and dtype), no attention layer to record."""

    attn_processors: dict[str, object] = {}

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def set_attn_processor(self, processors: dict[str, object]) -> None:
        pass


def test_only_the_whole_step_under_torch_compile_gets_cuda_graph_tree_marks(tmp_path: Path) -> None:
    """The packaged step's two passes replay graphs of their own (a mark would import torch.compile's machinery for
    nothing); the whole step under torch.compile's reduce-overhead needs each step marked."""
    from instantmesh.zero123plus.networks.compiled import CompiledNetworks
    from instantmesh.zero123plus.networks.eager import EagerNetworks
    from instantmesh.zero123plus.networks.overlapped_step import OverlappedStep
    from instantmesh.zero123plus.networks.packaged import PACKAGED_PARTS, PackagedNetworks, PackageSetup

    eager = EagerNetworks(OneParameter(), OneParameter(), OneParameter())
    packaged = PackagedNetworks.from_modules(eager, PackageSetup(tmp_path, CPU, cuda_graphs=False), [2])
    assert isinstance(packaged.batched.compiled, OverlappedStep) and set(packaged.parts) == set(PACKAGED_PARTS)
    assert packaged.pool is None and not packaged.overlapped.cuda_graphs
    assert CompiledNetworks(eager).batched.compiled.mark_steps
    assert not CompiledNetworks(eager, mode=None).batched.compiled.mark_steps
