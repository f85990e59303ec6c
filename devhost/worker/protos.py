"""The FunctionRpc message classes devhost hands to Azure's worker runtime, built from function_rpc.proto.

The runtime ships no protobuf module: the proxy worker passes one at worker init
(``properties={"protos": ...}``) and the runtime only touches messages through it
(``protos.TypedData(...)``, ``protos.StatusResult.Success``). So devhost builds real protobuf classes
(oneofs, maps, enums behave as the runtime expects) from our own subset of the protocol. The .proto is
parsed here rather than compiled by protoc, so nothing generated lives in the repository and no compiler
is needed; the parser understands exactly the constructs that file uses and refuses anything else.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2

PROTO_FILE = Path(__file__).with_name("function_rpc.proto")
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "sint64": _F.TYPE_SINT64,
    "double": _F.TYPE_DOUBLE,
}
_WELL_KNOWN = {"google.protobuf.Duration", "google.protobuf.Timestamp"}
_TOKEN = re.compile(r"//[^\n]*|\s+|([A-Za-z_][\w.]*|\d+|\"[^\"]*\"|[{}<>;=,])")


class ProtoSyntaxError(ValueError):
    """function_rpc.proto uses a construct this small parser does not know."""


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ProtoSyntaxError(f"unexpected character {text[pos]!r} at offset {pos}")
        if match.group(1):
            out.append(match.group(1))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.file = descriptor_pb2.FileDescriptorProto(name="function_rpc.proto", syntax="proto3")
        self.enums: set[str] = set()  # full names, to tell enum fields from message fields
        self.pending: list[tuple[_F, str, str]] = []  # (field, type name as written, scope) resolved at the end

    def next(self) -> str:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise ProtoSyntaxError(f"expected {tok!r}, got {got!r}")

    def parse(self) -> descriptor_pb2.FileDescriptorProto:
        while self.i < len(self.toks):
            tok = self.next()
            if tok == "syntax":
                self.expect("=")
                self.next()
                self.expect(";")
            elif tok == "package":
                self.file.package = self.next()
                self.expect(";")
            elif tok == "import":
                self.file.dependency.append(self.next().strip('"'))
                self.expect(";")
            elif tok == "message":
                self.message(self.file.message_type.add(), "")
            else:
                raise ProtoSyntaxError(f"unexpected {tok!r} at top level")
        for field, written, scope in self.pending:
            self.resolve(field, written, scope)
        return self.file

    def full(self, scope: str, name: str) -> str:
        return f"{self.file.package}.{scope}{name}"

    def message(self, msg: descriptor_pb2.DescriptorProto, scope: str) -> None:
        msg.name = self.next()
        inner = f"{scope}{msg.name}."
        self.expect("{")
        while (tok := self.next()) != "}":
            if tok == "enum":
                self.enum(msg.enum_type.add(), inner)
            elif tok == "message":
                self.message(msg.nested_type.add(), inner)
            elif tok == "oneof":
                index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=self.next())
                self.expect("{")
                while (kind := self.next()) != "}":
                    self.field(msg, inner, kind, _F.LABEL_OPTIONAL, oneof=index)
            elif tok == "map":
                self.map_field(msg, inner)
            elif tok == "repeated":
                self.field(msg, inner, self.next(), _F.LABEL_REPEATED)
            else:
                self.field(msg, inner, tok, _F.LABEL_OPTIONAL)

    def enum(self, enum: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        enum.name = self.next()
        self.enums.add(self.full(scope, enum.name))
        self.expect("{")
        while (name := self.next()) != "}":
            self.expect("=")
            enum.value.add(name=name, number=int(self.next()))
            self.expect(";")

    def field(
        self, msg: descriptor_pb2.DescriptorProto, scope: str, kind: str, label: int, oneof: int | None = None
    ) -> None:
        name = self.next()
        self.expect("=")
        field = msg.field.add(name=name, number=int(self.next()), label=label)
        self.expect(";")
        if oneof is not None:
            field.oneof_index = oneof
        self.pending.append((field, kind, scope))

    def map_field(self, msg: descriptor_pb2.DescriptorProto, scope: str) -> None:
        """``map<K, V> name = N;`` is a repeated nested ``NameEntry {K key = 1; V value = 2;}`` message."""
        self.expect("<")
        key = self.next()
        self.expect(",")
        value = self.next()
        self.expect(">")
        name = self.next()
        self.expect("=")
        number = int(self.next())
        self.expect(";")
        entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
        entry = msg.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        for field_name, num, kind in (("key", 1, key), ("value", 2, value)):
            field = entry.field.add(name=field_name, number=num, label=_F.LABEL_OPTIONAL)
            self.pending.append((field, kind, f"{scope}{entry_name}."))
        msg.field.add(
            name=name,
            number=number,
            label=_F.LABEL_REPEATED,
            type=_F.TYPE_MESSAGE,
            type_name=f".{self.full(scope, entry_name)}",
        )

    def resolve(self, field: _F, written: str, scope: str) -> None:
        if written in _SCALARS:
            field.type = _SCALARS[written]  # type: ignore[assignment]
            return
        if written in _WELL_KNOWN:
            field.type, field.type_name = _F.TYPE_MESSAGE, f".{written}"
            return
        # Protobuf scoping: the innermost enclosing scope that declares the name wins.
        parts = scope.rstrip(".").split(".") if scope else []
        for depth in range(len(parts), -1, -1):
            candidate = self.full("".join(f"{p}." for p in parts[:depth]), written)
            if candidate in self.enums:
                field.type, field.type_name = _F.TYPE_ENUM, f".{candidate}"
                return
            if self._declares_message(candidate):
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{candidate}"
                return
        raise ProtoSyntaxError(f"unknown type {written!r} in {scope or 'file scope'}")

    def _declares_message(self, full_name: str) -> bool:
        path = full_name.removeprefix(f"{self.file.package}.").split(".")
        level = list(self.file.message_type)
        for part in path:
            found = next((m for m in level if m.name == part), None)
            if found is None:
                return False
            level = list(found.nested_type)
        return True


def build(proto_file: Path = PROTO_FILE) -> types.SimpleNamespace:
    """One namespace holding a class per top-level message, as a generated ``*_pb2`` module would."""
    file_proto = _Parser(proto_file.read_text(encoding="utf-8")).parse()
    pool = descriptor_pool.DescriptorPool()
    for known in (duration_pb2, timestamp_pb2):
        dependency = descriptor_pb2.FileDescriptorProto()
        known.DESCRIPTOR.CopyToProto(dependency)
        pool.Add(dependency)
    pool.Add(file_proto)
    package = file_proto.package
    classes = {
        message.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{message.name}"))
        for message in file_proto.message_type
    }
    return types.SimpleNamespace(**classes)


protos = build()
