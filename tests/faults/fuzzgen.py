"""A seeded generator of worker-bound lines: valid messages and structured mutations of them.

Mutations: a field replaced by a random JSON value of another type, a field removed, an unknown field
added, random JSON instead of the message, truncation, flipped bytes, random bytes, huge and odd numbers,
deep nesting, invalid UTF-8, long strings. Valid messages include ids reused while possibly in flight and
inline images in refused formats (EPS, GIF). Every line is one frame (no raw newline inside).
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable
from typing import Any

import msgspec

_encode = msgspec.json.encode


def _png(size: tuple[int, int], mode: str = "RGB", format: str = "PNG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, (200, 80, 40) if mode == "RGB" else None).save(buf, format=format)
    return base64.b64encode(buf.getvalue()).decode()


class MessageFuzzer:
    """``next_line()`` returns the next frame (bytes, no newline); ids are unique per fuzzer."""

    def __init__(self, seed: int, root: str, image_path: str) -> None:
        self.rng = random.Random(seed)
        self.root = root
        self.image_path = image_path
        self.counter = 0
        self.small_png = _png((16, 16))
        self.grid_png = _png((32, 48))
        self.eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n").decode()
        self.small_gif = _png((16, 16), format="GIF")
        self.mutations: list[Callable[[dict[str, Any]], bytes]] = [
            self._replace_field,
            self._replace_field,
            self._drop_field,
            self._extra_field,
            self._random_json,
            self._truncate,
            self._flip_bytes,
            self._random_bytes,
            self._huge_number,
            self._deep_nesting,
            self._invalid_utf8,
            self._long_string,
            self._wrong_envelope,
        ]

    # ------------------------------------------------------------------ valid messages

    def valid(self) -> dict[str, Any]:
        """A valid request or cancel notification (never shutdown: the stream must go on)."""
        r = self.rng
        self.counter += 1
        ident: Any = self.counter if r.random() < 0.8 else f"s{self.counter}"
        out = f"{self.root}/out{r.randrange(8)}"
        choice = r.randrange(12)
        if choice == 0:
            method, params = "initialize", {"protocol_version": r.choice(["1.0", "1.7", "2.0"]), "client": "fuzz"}
        elif choice in (1, 2):
            method, params = "ping", None
            if r.random() < 0.2 and self.counter > 1:
                ident = self.counter - 1  # an id that may still be in flight (a quick method reusing it)
        elif choice == 3:
            method, params = "status", {}
        elif choice == 4:
            method, params = "load", {"models": r.sample(["views", "mesh"], r.randrange(3))}
        elif choice == 5:
            method, params = "unload", {"models": r.sample(["views", "mesh"], r.randrange(3))}
        elif choice in (6, 7):
            image = (
                {"type": "png", "data": self.small_png}
                if r.random() < 0.7
                else {"type": "path", "path": self.image_path}
            )
            if r.random() < 0.1:  # inline data in formats the worker must refuse (EPS would start Ghostscript)
                image = {"type": "png", "data": r.choice([self.eps, self.small_gif])}
            params = {"image": image, "seed": r.randrange(1000), "num_inference_steps": r.randrange(1, 4)}
            if r.random() < 0.5:
                params["output_path"] = out + ".png"
                params["overwrite"] = r.random() < 0.7
            method = "generate_views"
        elif choice in (8, 9):
            views = r.choice(
                [
                    {"type": "grid_png", "data": self.grid_png},
                    {"type": "handle", "handle": f"views-{r.choice(['0', 'abcd1234'])}-{r.randrange(5)}"},
                    {"type": "grid_path", "path": self.image_path},
                ]
            )
            params = {
                "views": views,
                "output_path": out + "." + r.choice(["obj", "glb", "ply"]),
                "overwrite": r.random() < 0.7,
            }
            method = "reconstruct"
        elif choice == 10:
            return {"jsonrpc": "2.0", "method": "cancel", "params": {"id": r.randrange(1, self.counter + 1)}}
        else:
            method, params = r.choice(["frobnicate", "", "Ping", "initialize "]), {}
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            message["params"] = params
        return message

    def next_line(self) -> bytes:
        message = self.valid()
        if self.rng.random() < 0.2:
            return _encode(message)
        line = self.rng.choice(self.mutations)(message)
        return line.replace(b"\n", b" ")

    # ------------------------------------------------------------------ random values

    def random_json(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(10 if depth < 4 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64, r.randrange(-1000, 1000)])
        if kind == 3:
            return r.choice([0.0, -0.0, 1.5, 1e308, -1e308, 5e-324, r.uniform(-1e6, 1e6)])
        if kind in (4, 5):
            alphabet = 'ab/._-\\"\u00e9\u4e2d\U0001f600 \t\u0000'
            return "".join(r.choice(alphabet) for _ in range(r.randrange(12)))
        if kind == 6:
            return r.choice(["", "/", "/tmp/x.png", "views-0-1", "2.0", "path", "png", "handle"])
        if kind in (7, 8):
            return [self.random_json(depth + 1) for _ in range(r.randrange(4))]
        return {self.random_json_key(): self.random_json(depth + 1) for _ in range(r.randrange(4))}

    def random_json_key(self) -> str:
        return self.rng.choice(
            [
                "id",
                "method",
                "params",
                "type",
                "path",
                "data",
                "image",
                "views",
                "seed",
                "models",
                "x",
                "jsonrpc",
                "result",
                "error",
            ]
        )

    def _paths(self, value: Any, prefix: tuple = ()) -> list[tuple]:
        found = [prefix]
        if isinstance(value, dict):
            for key, item in value.items():
                found += self._paths(item, prefix + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                found += self._paths(item, prefix + (i,))
        return found

    def _pick(self, message: dict[str, Any]) -> tuple:
        paths = [p for p in self._paths(message) if p]
        return self.rng.choice(paths)

    @staticmethod
    def _set(message: Any, path: tuple, value: Any) -> None:
        for key in path[:-1]:
            message = message[key]
        message[path[-1]] = value

    @staticmethod
    def _delete(message: Any, path: tuple) -> None:
        for key in path[:-1]:
            message = message[key]
        del message[path[-1]]

    # ------------------------------------------------------------------ mutations

    def _replace_field(self, message: dict[str, Any]) -> bytes:
        self._set(message, self._pick(message), self.random_json())
        return _encode(message)

    def _drop_field(self, message: dict[str, Any]) -> bytes:
        self._delete(message, self._pick(message))
        return _encode(message)

    def _extra_field(self, message: dict[str, Any]) -> bytes:
        target = self.rng.choice([p for p in self._paths(message) if isinstance(self._get(message, p), dict)])
        self._get(message, target)[self.random_json_key() + self.rng.choice(["", "_x"])] = self.random_json()
        return _encode(message)

    @staticmethod
    def _get(message: Any, path: tuple) -> Any:
        for key in path:
            message = message[key]
        return message

    def _random_json(self, message: dict[str, Any]) -> bytes:
        return _encode(self.random_json())

    def _truncate(self, message: dict[str, Any]) -> bytes:
        line = _encode(message)
        return line[: self.rng.randrange(len(line))]

    def _flip_bytes(self, message: dict[str, Any]) -> bytes:
        line = bytearray(_encode(message))
        for _ in range(self.rng.randrange(1, 4)):
            line[self.rng.randrange(len(line))] = self.rng.randrange(256)
        return bytes(line)

    def _random_bytes(self, message: dict[str, Any]) -> bytes:
        return self.rng.randbytes(self.rng.randrange(64))

    def _huge_number(self, message: dict[str, Any]) -> bytes:
        number = self.rng.choice(
            [
                b"1" + b"0" * self.rng.randrange(18, 400),
                b"-" + b"9" * self.rng.randrange(18, 400),
                b"1e999",
                b"-1e999",
                b"1e-999",
                b"0.0000000000000000000001",
                b"-0",
                b"18446744073709551616",
            ]
        )
        self._set(message, self._pick(message), "__NUMBER__")
        return _encode(message).replace(b'"__NUMBER__"', number, 1)

    def _deep_nesting(self, message: dict[str, Any]) -> bytes:
        depth = self.rng.choice([10, 100, 1000, 5000, 50_000 if self.rng.random() < 0.2 else 200])
        open_, close = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        nested = open_ * depth + b"1" + close * depth
        where = self.rng.choice(["params", "id", "whole"])
        if where == "whole":
            return nested
        line = _encode({k: v for k, v in message.items() if k != where})
        return line[:-1] + b',"' + where.encode() + b'":' + nested + b"}"

    def _invalid_utf8(self, message: dict[str, Any]) -> bytes:
        line = _encode(message)
        at = self.rng.randrange(len(line))
        return line[:at] + self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + line[at:]

    def _long_string(self, message: dict[str, Any]) -> bytes:
        path = self._pick(message)
        self._set(
            message,
            path,
            self.rng.choice(["/", "x", "\u00e9"])
            * self.rng.choice([1000, 5000, 20_000, 100_000 if self.rng.random() < 0.1 else 3000]),
        )
        return _encode(message)

    def _wrong_envelope(self, message: dict[str, Any]) -> bytes:
        variant = self.rng.randrange(5)
        if variant == 0:
            message["jsonrpc"] = self.random_json()
        elif variant == 1:
            message["result"] = self.random_json()
        elif variant == 2:
            message["error"] = {"code": self.random_json(), "message": self.random_json()}
        elif variant == 3:
            return _encode([message])
        else:
            message["id"] = self.random_json()
        return _encode(message)
