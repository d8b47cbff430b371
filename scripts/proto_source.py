"""Write a .proto file back from its descriptor (FileDescriptorProto), comments aside.

protovalidate's wheel carries `buf/validate/validate.proto` only as a serialized
descriptor; Buf compiles from sources, so `scripts/gen_protos.py` prints the file with
this module and checks that protoc reads the printed file back to the same descriptor.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, text_format
from google.protobuf.message import Message

F = descriptor_pb2.FieldDescriptorProto
_MAX_FIELD = 536870912  # extension ranges end there ("max"), exclusive
_SCALARS = {value: name.removeprefix("TYPE_").lower() for name, value in F.Type.items()}
_LABELS = {F.LABEL_OPTIONAL: "optional", F.LABEL_REQUIRED: "required", F.LABEL_REPEATED: "repeated"}


def _value(field, value) -> str:
    """An option's value in .proto syntax."""
    if field.message_type is not None:
        return "{" + text_format.MessageToString(value, as_one_line=True) + "}"
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + text_format.text_encoding.CEscape(value, as_utf8=True) + '"'
    return repr(value)


def _options(options: Message) -> list[str]:
    """`name = value` for every option set, extensions as `(full.name)`."""
    out = []
    for field, value in options.ListFields():
        name = f"({field.full_name})" if field.is_extension else field.name
        values = value if field.is_repeated else [value]
        out.extend(f"{name} = {_value(field, v)}" for v in values)
    return out


def _json_default(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _field(f: F, proto3: bool, in_oneof: bool) -> str:
    kind = f.type_name if f.type_name else _SCALARS[f.type]
    label = "" if in_oneof else _LABELS[f.label] + " "
    if proto3 and f.label == F.LABEL_OPTIONAL and not f.proto3_optional:
        label = ""
    options = _options(f.options)
    if f.HasField("json_name") and f.json_name != _json_default(f.name):
        options.insert(0, f'json_name = "{f.json_name}"')
    if f.HasField("default_value"):
        default = f'"{f.default_value}"' if f.type in (F.TYPE_STRING, F.TYPE_BYTES) else f.default_value
        options.insert(0, f"default = {default}")
    suffix = f" [{', '.join(options)}]" if options else ""
    return f"{label}{kind} {f.name} = {f.number}{suffix};"


def _ranges(ranges, inclusive_end: bool) -> str:
    parts = []
    for r in ranges:
        last = r.end if inclusive_end else r.end - 1
        parts.append(str(r.start) if last == r.start else
                     f"{r.start} to {'max' if r.end >= _MAX_FIELD else last}")
    return ", ".join(parts)


def _enum(e: descriptor_pb2.EnumDescriptorProto, indent: str) -> list[str]:
    lines = [f"{indent}enum {e.name} {{"]
    lines += [f"{indent}  option {o};" for o in _options(e.options)]
    for v in e.value:
        options = _options(v.options)
        lines.append(f"{indent}  {v.name} = {v.number}" + (f" [{', '.join(options)}]" if options else "") + ";")
    if e.reserved_range:
        lines.append(f"{indent}  reserved {_ranges(e.reserved_range, inclusive_end=True)};")
    if e.reserved_name:
        lines.append(f"{indent}  reserved {', '.join(repr(n).replace(chr(39), chr(34)) for n in e.reserved_name)};")
    return [*lines, f"{indent}}}"]


def _message(m: descriptor_pb2.DescriptorProto, proto3: bool, indent: str) -> list[str]:
    lines = [f"{indent}message {m.name} {{"]
    inner = indent + "  "
    lines += [f"{inner}option {o};" for o in _options(m.options)]
    real_oneofs = {f.oneof_index for f in m.field if f.HasField("oneof_index") and not f.proto3_optional}
    done: set[int] = set()
    for f in m.field:
        if f.HasField("oneof_index") and f.oneof_index in real_oneofs:
            if f.oneof_index in done:
                continue
            done.add(f.oneof_index)
            oneof = m.oneof_decl[f.oneof_index]
            lines.append(f"{inner}oneof {oneof.name} {{")
            lines += [f"{inner}  option {o};" for o in _options(oneof.options)]
            lines += [f"{inner}  {_field(g, proto3, True)}" for g in m.field
                      if g.HasField("oneof_index") and g.oneof_index == f.oneof_index]
            lines.append(f"{inner}}}")
        else:
            lines.append(f"{inner}{_field(f, proto3, False)}")
    for nested in m.nested_type:
        lines += _message(nested, proto3, inner)
    for e in m.enum_type:
        lines += _enum(e, inner)
    lines += _extensions(m.extension, inner)
    if m.extension_range:
        lines.append(f"{inner}extensions {_ranges(m.extension_range, inclusive_end=False)};")
    if m.reserved_range:
        lines.append(f"{inner}reserved {_ranges(m.reserved_range, inclusive_end=False)};")
    if m.reserved_name:
        lines.append(f"{inner}reserved {', '.join(chr(34) + n + chr(34) for n in m.reserved_name)};")
    return [*lines, f"{indent}}}"]


def _extensions(fields, indent: str) -> list[str]:
    lines: list[str] = []
    for extendee in dict.fromkeys(f.extendee for f in fields):
        lines.append(f"{indent}extend {extendee} {{")
        lines += [f"{indent}  {_field(f, False, False)}" for f in fields if f.extendee == extendee]
        lines.append(f"{indent}}}")
    return lines


def proto_source(fd: descriptor_pb2.FileDescriptorProto) -> str:
    """The .proto text of a proto2 or proto3 file (editions are not supported)."""
    syntax = fd.syntax or "proto2"
    if syntax not in ("proto2", "proto3"):
        raise ValueError(f"{fd.name}: syntax {syntax!r} is not supported")
    proto3 = syntax == "proto3"
    lines = [f'syntax = "{syntax}";', "", f"package {fd.package};", ""]
    lines += [f'import "{dep}";' for dep in fd.dependency]
    lines += [""] + [f"option {o};" for o in _options(fd.options)]
    for m in fd.message_type:
        lines += ["", *_message(m, proto3, "")]
    for e in fd.enum_type:
        lines += ["", *_enum(e, "")]
    if fd.extension:
        lines += ["", *_extensions(fd.extension, "")]
    return "\n".join(lines) + "\n"
