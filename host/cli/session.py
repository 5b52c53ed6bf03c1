"""The interactive session: one warm worker, objects typed in one after another.

The person types an image path or a folder (or a command); each object shows a progress bar for the
diffusion steps and for the reconstruction, where its outputs went and how long each stage took. The
models load once, on the first object (or ``load``), and that cold time is reported apart.

Ctrl-C while an object runs cancels the request on the worker (the worker lives in its own process group,
so the terminal's SIGINT reaches only this process) and returns to the prompt; Ctrl-C at the prompt, a
second Ctrl-C while cancelling, ``quit`` or end of input shut the worker down cleanly. Nothing of a cancelled
object remains: its files go once the worker has stopped its request, and again after the worker is shut
down (a second Ctrl-C does not wait for the first cancel to finish).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rpcworker.wire.errors import RpcError

from ..api.facade import InstantMeshWorker
from ..api.naming import UniqueNames, object_name_budget
from ..api.progress import ProgressPrinter
from ..worker.errors import HostError, WorkerStartError
from .arguments import EXIT_OK, EXIT_USAGE, make_worker, settings_from_args
from .checks import check_cuda_before_start, check_host_libraries, check_output_dir
from .display import printable_lines, shown
from .fetch_weights import fallback_note
from .inputs import ObjectInput, collect_inputs
from .lines import SESSION_HELP as HELP
from .lines import bytes_text as _bytes
from .lines import report_object
from .objects import ObjectOutputs, ObjectResult, Settings, ensure_loaded, run_object
from .session_settings import SETTING_COMMANDS

PROMPT = "instantmesh> "
SECOND_INTERRUPT_S = 1.0


class Session:
    """The prompt loop around one InstantMeshWorker; ``run`` returns the process exit code."""

    def __init__(
        self,
        worker: InstantMeshWorker,
        settings: Settings,
        *,
        stdout: TextIO | None = None,
        read_line: Callable[[str], str] = input,
        preset: str | None = None,
    ) -> None:
        self.worker = worker
        self.preset = preset
        """The person's --preset (None: not given, so the tiny preset may be the fallback)."""
        self.settings = settings
        self.stdout = stdout or sys.stdout
        self.read_line = read_line
        self.printer = ProgressPrinter(self.stdout)
        self.results: list[ObjectResult] = []
        self.cold_load: dict[str, float] = {}
        self.generation = 0
        self.cancelled: list[ObjectOutputs] = []
        """The outputs of objects cancelled this session: none may remain (`_discard_cancelled`)."""

    def say(self, text: str = "") -> None:
        """A line (or lines) for the person; names in it are shown, never obeyed (control characters escaped)."""
        self.printer.print(printable_lines(text))

    # ------------------------------------------------------------------ life

    def run(self) -> int:
        try:
            self.say(f"starting the worker ({self.worker.command_line}) ...")
            began = time.monotonic()
            self.worker.start()
        except KeyboardInterrupt:
            self.say("interrupted while starting the worker")
            self.worker.close()
            return 130
        except WorkerStartError as exc:
            self.say(f"error: the worker could not start: {exc}")
            return EXIT_USAGE
        self.generation = self.worker.generation
        self._banner(time.monotonic() - began)
        try:
            self._loop()
        finally:
            self._shutdown()
        return EXIT_OK

    def _banner(self, startup_s: float) -> None:
        info = self.worker.info
        rule = "=" * max(60, len(info.model_label) + 12)
        self.say("instantmesh-rpc session")
        self.say(rule)
        self.say(f"  MODEL   {info.model_label}")
        self.say(rule)
        note = fallback_note(info.weights, self.preset)
        if note:
            self.say(note)
        self.say(f"  worker  pid {info.pid}, {info.backend} backend, started in {startup_s:.1f} s")
        self.say(
            f"  python  {info.python}"
            + (f", torch {info.torch}" if info.torch else "")
            + (f", CUDA {info.cuda}" if info.cuda else "")
        )
        self.say(f"  device  {info.device}")
        self.say(f"  output  {self._settings_line()}")
        self.say("Type an image path or a folder to make meshes; 'help' lists the commands.")

    def _settings_line(self) -> str:
        s = self.settings
        return (
            f"{shown(s.out_dir)}/ ({s.format}, {s.views.num_inference_steps} steps, seed {s.views.seed}, "
            f"contact sheet {'on' if s.contact_sheet else 'off'}, preprocess {'on' if s.preprocess else 'off'})"
        )

    def _loop(self) -> None:
        while True:
            try:
                line = self.read_line(PROMPT)
            except EOFError:
                self.say()
                return
            except KeyboardInterrupt:
                self.say()
                self.say("Ctrl-C at the prompt: quitting")
                return
            try:
                if not self.handle(line):
                    return
            except KeyboardInterrupt:
                self.printer.end_line()
                self.say("second Ctrl-C: quitting")
                return

    def _shutdown(self) -> None:
        """Ignores further Ctrl-C so a hurried second press cannot leave the worker half-stopped."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.say("shutting down the worker ...")
            code = self.worker.close()
            self._discard_cancelled()  # the worker has stopped: nothing of a cancelled request can land any more
            done = sum(r.status == "ok" for r in self.results)
            self.say(f"worker stopped (exit code {code}); {done} object(s) done this session")
        finally:
            signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------------ commands

    def handle(self, line: str) -> bool:
        """Runs one line; returns False to end the session."""
        text = line.strip()
        if not text:
            return True
        word, _, rest = text.partition(" ")
        change = SETTING_COMMANDS.get(word.lower())
        if change is not None:
            self.say(change(self.settings, rest.strip()))
            return True
        command = getattr(self, f"cmd_{word.lower()}", None) if word.isalpha() else None
        if command is not None:
            try:
                return command(rest.strip()) is not False
            except (RpcError, HostError) as exc:
                self.say(f"error: {exc}")
                return True
        self.make(self._paths(text))
        return True

    def cmd_quit(self, _: str) -> bool:
        return False

    cmd_exit = cmd_quit

    def cmd_help(self, _: str) -> None:
        self.say(HELP)

    def cmd_load(self, _: str) -> None:
        seconds = self._ensure_loaded()
        if not seconds:
            self.say("models already loaded")

    def cmd_unload(self, _: str) -> None:
        result = self.worker.unload()
        memory = f"; {_bytes(result.memory.allocated_bytes)} allocated now" if result.memory else ""
        self.say(f"unloaded: {', '.join(result.unloaded) or 'nothing was loaded'}{memory}")

    def cmd_status(self, _: str) -> None:
        status = self.worker.status()
        self.say(
            f"  worker   pid {status.pid}, {status.backend} backend, up {status.uptime_s:.0f} s, {status.requests_served} requests served"
        )
        self.say(f"  model    {status.model_label}")
        self.say(f"  loaded   {', '.join(status.loaded) or 'nothing'}")
        if status.memory is not None:
            m = status.memory
            total = f" of {_bytes(m.total_bytes)}" if m.total_bytes else ""
            self.say(
                f"  memory   {m.device}: {_bytes(m.allocated_bytes)} allocated, peak {_bytes(m.peak_bytes)}{total}"
            )
        self.say(
            f"  device   {status.device}; views held {status.handles}/{status.max_handles}; busy: {status.busy or 'no'}"
        )
        counts = {s: sum(r.status == s for r in self.results) for s in ("ok", "failed", "cancelled")}
        cold = f"; first load {sum(self.cold_load.values()):.1f} s" if self.cold_load else ""
        self.say(f"  objects  {counts['ok']} done, {counts['failed']} failed, {counts['cancelled']} cancelled{cold}")
        self.say(f"  output   {self._settings_line()}")

    # ------------------------------------------------------------------ objects

    def _paths(self, text: str) -> list[str]:
        """The whole line as one path when it exists (spaces allowed), else shell-style words."""
        if os.path.exists(os.path.expanduser(text)):
            return [text]
        try:
            return shlex.split(text)
        except ValueError:
            return [text]

    def _ensure_loaded(self) -> dict[str, float]:
        if self.worker.generation != self.generation:
            self.generation = self.worker.generation
            self.say(f"note: the worker was restarted (pid {self.worker.info.pid}); models load again")
        seconds = ensure_loaded(self.worker, self.printer)
        if seconds:
            parts = ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items())
            first = not self.cold_load
            self.cold_load = self.cold_load or seconds
            note = "cold start, once per session" if first else "reloaded"
            self.say(f"  load  {sum(seconds.values()):6.1f} s ({parts}) -- {note}")
        return seconds

    def make(self, arguments: list[str]) -> None:
        items, notes = collect_inputs(arguments, object_name_budget(self.settings.out_dir))
        for note in notes:
            self.say(note)
        missing = [item for item in items if item.problem]
        for item in missing:
            self.say(f"{item.problem} (type help for the commands)")
        items = [item for item in items if not item.problem]
        if not items:
            return
        current: ObjectInput | None = None
        outputs: ObjectOutputs | None = None
        index = 0
        try:
            self._ensure_loaded()
            for index, found in enumerate(items):
                current = outputs = None
                name = self._free_name(found.name)
                outputs = self.settings.outputs(name)
                self.cancelled = [earlier for earlier in self.cancelled if earlier != outputs]  # this one's now
                current = ObjectInput(name, found.image, found.mask)
                counter = f" ({index + 1}/{len(items)})" if len(items) > 1 else ""
                mask = f" + {shown(found.mask)}" if found.mask else ""
                self.say(f"[{len(self.results) + 1}] {name}{counter}  <- {shown(found.image)}{mask}")
                result = run_object(self.worker, current, self.settings, outputs, self.printer)
                current = None
                self.results.append(result)
                report_object(self.printer, result)
        except KeyboardInterrupt:
            if current is not None and outputs is not None:
                self.cancelled.append(outputs)
            try:
                self.printer.end_line()
                if current is not None:
                    self.results.append(ObjectResult(current.name, current.image, "cancelled"))
                self.say(f"  cancelled -- the worker stays warm (Ctrl-C again within {SECOND_INTERRUPT_S:.0f} s quits)")
                skipped = [item.name for item in items[index + 1 :]]
                if skipped:
                    self.say(f"  skipped, not started: {', '.join(skipped)}")
                self._settle()
            finally:  # a second Ctrl-C too: the session quits, and `_shutdown` removes them again once the worker stopped
                self._discard_cancelled()
        except WorkerStartError as exc:
            self.printer.end_line()
            self.say(f"error: the worker could not be restarted: {exc}")
        except (RpcError, HostError, OSError) as exc:
            self.printer.end_line()
            self.say(f"error: {exc}")

    def _free_name(self, stem: str) -> str:
        """``stem``, or ``stem-2``, ``stem-3`` ... (cut to fit the file system), the first none of whose outputs
        exists: the session never overwrites earlier results, nor reads back its own outputs as one."""
        names = UniqueNames(object_name_budget(self.settings.out_dir))
        number = 1
        while self.settings.outputs(name := names.numbered(stem, number)).any_exists():
            number += 1
        return name

    def _discard_cancelled(self) -> None:
        """Removes what cancelled objects wrote; their names were free before, so nothing older is lost. Kept in
        the books until the session ends: a worker that had not stopped yet may still write them."""
        for outputs in self.cancelled:
            for path, _ in outputs.described("", True):
                path.unlink(missing_ok=True)

    def _settle(self, timeout: float = 10.0) -> None:
        """Waits until the worker has stopped the cancelled request; a Ctrl-C meanwhile quits the session."""
        deadline = time.monotonic() + max(timeout, SECOND_INTERRUPT_S)
        grace = time.monotonic() + SECOND_INTERRUPT_S
        while True:
            try:
                status = self.worker.status()
            except (RpcError, HostError) as exc:
                self.say(f"  (the worker did not answer: {exc})")
                return
            now = time.monotonic()
            if status.busy is None and status.queued == 0 and now >= grace:
                return
            if now >= deadline:
                self.say(f"  (the worker is still stopping {status.busy}; the next object waits for it)")
                return
            time.sleep(0.05)


def _readline_if_terminal() -> None:
    """Line editing and history at a real terminal; none at a dumb one, which would show escape codes."""
    if sys.stdin.isatty() and os.environ.get("TERM", "dumb") not in ("", "dumb"):
        try:
            import readline  # noqa: F401
        except ImportError:
            return


def run_session(args: argparse.Namespace) -> int:
    _readline_if_terminal()
    settings = settings_from_args(args)
    check_host_libraries(settings)
    check_output_dir(settings.out_dir)
    worker = make_worker(args)
    check_cuda_before_start(worker, args.device, args.backend or ("mock" if args.mock else "instantmesh"))
    session = Session(worker, settings, preset=args.preset)
    return session.run()
