"""Message types and their wire shapes."""

from __future__ import annotations

import msgspec
import pytest

from rpcworker.wire import errors
from rpcworker.wire.envelopes import ErrorObject, ErrorResponse, Incoming, Notification, Request, Response
from rpcworker.wire.messages import (
    METHODS,
    GenerateViewsParams,
    ImagePath,
    ImagePng,
    ProgressParams,
    ReconstructParams,
    ViewsGridPath,
    ViewsHandle,
    major,
)

decode_incoming = msgspec.json.Decoder(Incoming).decode
encode = msgspec.json.encode


def test_request_always_carries_jsonrpc_first() -> None:
    wire = encode(Request(7, "ping"))
    assert wire == b'{"jsonrpc":"2.0","id":7,"method":"ping"}'


def test_notification_has_no_id() -> None:
    wire = encode(Notification("progress", ProgressParams(3, "diffusion", 1, 75)))
    assert msgspec.json.decode(wire) == {
        "jsonrpc": "2.0",
        "method": "progress",
        "params": {"id": 3, "stage": "diffusion", "step": 1, "total": 75, "message": ""},
    }


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_result_round_trips_through_its_decoder(method: str) -> None:
    spec = METHODS[method]
    # Build a minimal valid instance by decoding defaults through msgspec's own conversion.
    sample = msgspec.json.decode(encode(_sample(spec.result)), type=spec.result)
    wire = encode(Response(1, sample))
    incoming = decode_incoming(wire)
    assert incoming.id == 1 and incoming.jsonrpc == "2.0"
    assert msgspec.json.decode(incoming.result, type=spec.result) == sample
    assert set(msgspec.json.decode(incoming.result)) == set(spec.result.__struct_fields__), (
        "every field goes on the wire"
    )


def _sample(cls: type) -> msgspec.Struct:
    values = {
        int: 1,
        float: 1.5,
        str: "x",
        bool: True,
    }
    kwargs = {}
    for field in msgspec.structs.fields(cls):
        name, t = field.name, field.type
        if hasattr(t, "__metadata__"):  # Annotated[int, Meta(...)]: the base type (1 fits every declared range)
            t = t.__origin__
        if t in values:
            kwargs[name] = values[t]
        elif getattr(t, "__origin__", None) is list:
            kwargs[name] = []
        elif getattr(t, "__origin__", None) is dict:
            kwargs[name] = {}
        else:
            kwargs[name] = None
    return cls(**kwargs)


@pytest.mark.parametrize("cls", sorted(errors.WIRE_ERRORS.values(), key=lambda c: c.code), ids=lambda c: c.name)
def test_every_error_code_round_trips(cls: type[errors.RpcError]) -> None:
    err = cls("something named went wrong", {"path": "/x.png"})
    wire = encode(ErrorResponse(5, ErrorObject(err.code, err.message, err.data)))
    incoming = decode_incoming(wire)
    back = errors.error_from_wire(incoming.error.code, incoming.error.message, incoming.error.data)
    assert type(back) is cls
    assert back.data == {"path": "/x.png"} and back.message == err.message
    assert str(back).startswith(f"[{cls.code} {cls.name}]")


def test_error_codes_are_unique_and_in_the_json_rpc_ranges() -> None:
    codes = [c.code for c in errors.WIRE_ERRORS.values()]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert -32768 <= code <= -32000


def test_unknown_error_code_stays_generic() -> None:
    err = errors.error_from_wire(-32099, "new", None)
    assert type(err) is errors.RpcError and err.code == -32099


def test_image_input_is_a_tagged_union() -> None:
    params = msgspec.json.decode(b'{"image": {"type": "path", "path": "/a.png"}, "seed": 3}', type=GenerateViewsParams)
    assert params.image == ImagePath("/a.png") and params.num_inference_steps == 75
    inline = encode(GenerateViewsParams(ImagePng(b"\x89PNG")))
    assert b'"type":"png","data":"iVBORw=="' in inline
    with pytest.raises(msgspec.ValidationError, match="type"):
        msgspec.json.decode(b'{"image": {"type": "url", "path": "x"}}', type=GenerateViewsParams)


def test_views_source_union_and_defaults() -> None:
    p = msgspec.json.decode(
        b'{"views": {"type": "handle", "handle": "h"}, "output_path": "/m.obj"}', type=ReconstructParams
    )
    assert p.views == ViewsHandle("h") and p.format is None and p.orientation == "instantmesh" and not p.overwrite
    p = msgspec.json.decode(
        b'{"views": {"type": "grid_path", "path": "/g.png"}, "output_path": "/m.glb"}', type=ReconstructParams
    )
    assert p.views == ViewsGridPath("/g.png")


def test_unknown_fields_are_refused_with_a_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"^Object contains unknown field `sedd`$"):
        msgspec.json.decode(b'{"image": {"type": "path", "path": "/a"}, "sedd": 1}', type=GenerateViewsParams)
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `x` - at `\$\.image`"):
        msgspec.json.decode(b'{"image": {"type": "path", "path": "/a", "x": 1}}', type=GenerateViewsParams)
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int` >= 1 - at `\$\.num_inference_steps`"):
        msgspec.json.decode(
            b'{"image": {"type": "path", "path": "/a"}, "num_inference_steps": 0}', type=GenerateViewsParams
        )


def test_incoming_classifies_by_fields() -> None:
    req = decode_incoming(b'{"jsonrpc":"2.0","id":"a","method":"ping"}')
    assert req.id == "a" and req.method == "ping" and req.params is msgspec.UNSET
    note = decode_incoming(b'{"jsonrpc":"2.0","method":"cancel","params":{"id":3}}')
    assert note.id is msgspec.UNSET
    err = decode_incoming(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"m"}}')
    assert err.id is None and err.error.code == -32700


def test_major_version() -> None:
    assert major("1.4") == "1" and major("2") == "2"
