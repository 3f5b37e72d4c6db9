"""Whole-module pickles read as data: nothing they name is imported, nothing they hold runs.

Robust fine-tuning code saves whole ``nn.Module`` objects: WiSE-FT with ``pickle.dump``,
task vectors with ``torch.save``, OpenAI's CLIP as TorchScript archives. Unpickling them
the usual way imports their classes (``src.models.modeling``, ``clip.model``) and calls
whatever the pickle asks for. :class:`InertUnpickler` instead gives every global a pickle
names an inert stand-in (:class:`Inert`) that records the name and what it was given and
is never called, except a short list (:data:`REBUILDS`) through which torch rebuilds
tensors, storages and plain containers, each checking its arguments first. The
state_dict is then recovered from the stand-ins the way ``nn.Module.state_dict`` writes
it: parameters, persistent buffers, submodules by attribute name.

The containers are read by torch's own machinery: ``torch.serialization._load`` for a
``torch.save`` zip or a TorchScript archive (its ``data.pkl``), ``torch.load`` with this
module as ``pickle_module`` for the legacy format (which bare pickles' storages are in).
"""

from __future__ import annotations

import _compat_pickle
import ast
import io
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import torch

from ..errors import CheckpointError

TORCHSCRIPT = "__torch__"  # the module prefix of a TorchScript archive's classes
PLAIN = (bool, int, float, str, type(None))  # module attributes worth reporting


class Inert:
    """An object of a global the pickle names: its name and what it was given, nothing more.

    Calling the stand-in of a class or a function (``REDUCE``, ``NEWOBJ``) makes another
    instance recording the arguments; ``BUILD`` records the state, ``SETITEMS`` and
    ``APPENDS`` the items. No method of the original ever runs.
    """

    global_name: ClassVar[str] = ""  # "module.name" as the pickle wrote it

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, elements=[])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise pickle.UnpicklingError(f"a tensor rebuilt from {what}")


def _ints(values: Any, what: str) -> tuple[int, ...]:
    _check(isinstance(values, (tuple, list, torch.Size)), what)
    _check(all(type(v) is int for v in values), what)
    return tuple(values)


def rebuild_tensor(storage, offset, size, stride, requires_grad=False, *_hooks_and_metadata):
    """``torch._utils._rebuild_tensor_v2`` on checked arguments; hooks and metadata dropped."""
    _check(isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)), "no storage")
    _check(type(offset) is int, "a non-integer offset")
    size, stride = _ints(size, "a bad size"), _ints(stride, "a bad stride")
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, bool(requires_grad), OrderedDict()
    )


def rebuild_parameter(data, requires_grad=True, *_hooks_and_state):
    """``nn.Parameter`` of an already rebuilt tensor; hooks and attribute state dropped."""
    _check(isinstance(data, torch.Tensor), "a parameter of no tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


TENSOR_TYPES = {"torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"}


def rebuild_from_type(func, new_type, args, _state):
    """``torch._tensor._rebuild_from_type_v2`` for a plain tensor or a parameter only."""
    _check(func in (rebuild_tensor, rebuild_parameter), "an unknown rebuild function")
    _check(getattr(new_type, "global_name", None) in TENSOR_TYPES, "a tensor subclass")
    _check(isinstance(args, tuple), "bad arguments")
    tensor = func(*args)
    if new_type.global_name.endswith("Parameter") and not isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(tensor)
    return tensor


def load_storage_bytes(data):
    """``torch.storage._load_from_bytes`` (how ``pickle.dump`` stores a storage): the bytes,
    a ``torch.save`` of one storage, read by :func:`read_stream` again, safely."""
    _check(isinstance(data, bytes), "storage bytes that are not bytes")
    storage = read_stream(io.BytesIO(data)).root
    _check(isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)), "no storage")
    return storage


def construct(cls, *args):
    """``copyreg.__newobj__`` / ``_reconstructor`` (protocols 0 and 1): stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, Inert)):
        raise pickle.UnpicklingError(f"an object of {cls!r} constructed")
    return cls()


def _latin1(text, encoding="latin1"):
    """``_codecs.encode``, how protocol 2 writes bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("bytes encoded otherwise than latin1")
    return text.encode("latin1")


def _ordered_dict(items=()):
    _check(isinstance(items, (list, tuple, dict)), "an OrderedDict of no items")
    return OrderedDict(items)


def _set(items=()):
    _check(isinstance(items, (list, tuple)), "a set of no items")
    return set(items)


def _size(values=()):
    return torch.Size(_ints(values, "a bad size"))


# The globals that are rebuilt for real; every other global is an Inert stand-in.
REBUILDS: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): load_storage_bytes,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): lambda items=(): frozenset(_set(items)),
    ("torch", "Size"): _size,
    ("_codecs", "encode"): _latin1,
    ("copyreg", "__newobj__"): construct,
    ("copyreg", "_reconstructor"): lambda cls, _base=None, _state=None: construct(cls),
}


class InertUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals are :data:`REBUILDS` or :class:`Inert` stand-ins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stand_ins: dict[str, type[Inert]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names (protocol 2)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in REBUILDS:
            return REBUILDS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        qualified = f"{module}.{name}"
        if qualified not in self.stand_ins:
            self.stand_ins[qualified] = type(name, (Inert,), {"global_name": qualified})
        return self.stand_ins[qualified]


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`InertUnpickler` (torch's legacy format calls this)."""
    return InertUnpickler(file, **kwargs).load()


class _PickleModule:
    """This reader as the ``pickle_module`` torch's loaders take."""

    __name__ = "clipsharp.core.pickles"
    Unpickler = InertUnpickler
    load = staticmethod(load)


@dataclass
class Pickled:
    """What a pickle holds, read as data, and how it was stored."""

    root: Any  # tensors, plain containers and Inert stand-ins
    container: str  # "pickle", "torch.save" or "TorchScript archive"
    declared: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # ^ TorchScript: class -> (its __parameters__, its __buffers__), from the archive's code/


def read_pickle(path: Path) -> Pickled:
    """Read a pickle, a ``torch.save`` file or a TorchScript archive, executing nothing.

    Raises:
        CheckpointError: the file is none of these, or holds a tensor it cannot rebuild.
    """
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_stream(f)
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RuntimeError,
        OverflowError,
        RecursionError,
    ) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable pickle, torch.save file or TorchScript archive "
            f"({detail}); it may be truncated or corrupt: save or download it again"
        ) from e


def read_stream(f: IO[bytes]) -> Pickled:
    """:func:`read_pickle` of an open binary file."""
    if torch.serialization._is_zipfile(f):
        with torch.serialization._open_zipfile_reader(f) as archive:
            root = torch.serialization._load(archive, "cpu", _PickleModule, "data.pkl")
            if not torch.serialization._is_torchscript_zip(archive):
                return Pickled(root, "torch.save")
            return Pickled(root, "TorchScript archive", _declarations(archive))
    start = f.tell()
    first = load(f)
    if first != torch.serialization.MAGIC_NUMBER:  # not torch.save's legacy format
        return Pickled(first, "pickle")
    f.seek(start)
    root = torch.load(f, map_location="cpu", pickle_module=_PickleModule, weights_only=False)
    return Pickled(root, "torch.save")


_CLASS = re.compile(
    r"^class (\w+)\(Module\):\n  __parameters__ = (\[.*?\])\n  __buffers__ = (\[.*?\])",
    re.MULTILINE,
)


def _declarations(archive) -> dict[str, tuple[list[str], list[str]]]:
    """``{"__torch__.clip.model.CLIP": (parameters, buffers)}`` read from the text of the
    archive's ``code/`` files (never compiled): the lines TorchScript writes at the top of
    each module class, ``__parameters__ = ["proj", ]`` and ``__buffers__ = [...]``."""
    declared = {}
    for record in archive.get_all_records():
        if not (record.startswith("code/") and record.endswith(".py")):
            continue
        module = record.removeprefix("code/").removesuffix(".py").replace("/", ".")
        text = archive.get_record(record).decode("utf-8", "replace")
        for name, parameters, buffers in _CLASS.findall(text):
            declared[f"{module}.{name}"] = (ast.literal_eval(parameters), ast.literal_eval(buffers))
    return declared


@dataclass
class Recovered:
    """A module tree's state_dict, with the plain attributes and classes of its modules."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # as nn.Module.state_dict
    attributes: dict[str, Any] = field(default_factory=dict)  # "classification_head.normalize"
    classes: dict[str, str] = field(default_factory=dict)  # module path -> its class ("" root)


def is_module(obj: Any) -> bool:
    """A stand-in of an ``nn.Module`` (its state has ``_parameters``) or a TorchScript one."""
    if not isinstance(obj, Inert) or not isinstance(obj.state, Mapping):
        return False
    return "_parameters" in obj.state or obj.global_name.startswith(TORCHSCRIPT + ".")


def recover_state_dict(module: Inert, pickled: Pickled) -> Recovered:
    """The state_dict ``module.state_dict()`` would give, read from the stand-ins."""
    found = Recovered()
    _recover(module, "", pickled, found)
    return found


def _recover(module: Inert, prefix: str, pickled: Pickled, found: Recovered) -> None:
    state = module.state
    found.classes[prefix.removesuffix(".")] = module.global_name
    for name, value in state.items():
        if isinstance(name, str) and isinstance(value, PLAIN) and not name.startswith("_"):
            found.attributes[prefix + name] = value
    tensors, children = (
        _torchscript_members(module, pickled) if "_parameters" not in state else _members(state)
    )
    for name, tensor in tensors.items():
        if tensor is not None:
            found.tensors[prefix + name] = tensor
    for name, child in children.items():
        if child is not None:
            if not is_module(child):
                raise pickle.UnpicklingError(f"submodule {prefix + name} that is no module")
            _recover(child, f"{prefix}{name}.", pickled, found)


def _members(state: Mapping) -> tuple[dict[str, Any], dict[str, Any]]:
    """An ``nn.Module``'s tensors (parameters, then persistent buffers) and submodules."""
    skipped = state.get("_non_persistent_buffers_set", set())
    if not isinstance(skipped, (set, frozenset)):
        raise pickle.UnpicklingError("a module whose non-persistent buffers are no set")
    tensors = dict(_mapping(state.get("_parameters", {})))
    buffers = _mapping(state.get("_buffers", {}))
    tensors |= {name: b for name, b in buffers.items() if name not in skipped}
    return tensors, dict(_mapping(state.get("_modules", {})))


def _torchscript_members(module: Inert, pickled: Pickled) -> tuple[dict, dict]:
    """A TorchScript module's declared parameters and buffers, and its submodules."""
    declared = pickled.declared.get(module.global_name)
    if declared is None:
        raise pickle.UnpicklingError(f"class {module.global_name} that code/ does not declare")
    parameters, buffers = declared
    tensors = {name: module.state.get(name) for name in [*parameters, *buffers]}
    children = {name: v for name, v in module.state.items() if is_module(v)}
    return tensors, children


def _mapping(value: Any) -> Mapping:
    """A dict, or a dict subclass's stand-in (its items)."""
    if isinstance(value, Inert):
        return value.items
    if not isinstance(value, Mapping):
        raise pickle.UnpicklingError(f"module members held in a {type(value).__name__}")
    return value
