"""Optimizer checkpoints that survive crashes: :func:`save` and :func:`load`.

The file format (no pickle; every integer little-endian)::

    magic          8 bytes   b"FASTOPT\\n"
    header length  8 bytes   unsigned
    header         JSON, UTF-8: format version, fastopt version, algorithm,
                   per group its hyperparameters and its parameters' shapes and
                   dtypes, per parameter with state its step count, its scalar
                   state (NAdam's mu_product, ...) as hexadecimal floats, and the
                   offset and size of each state buffer (typed like its
                   parameter, shaped as the algorithm's registry row says: the
                   parameter's shape, or Adafactor's row and column factors),
                   the names of torch-only options
    payload        the state buffers' bytes, one after the other (little-endian)
    digest         32 bytes  SHA-256 of every byte above

The digest covers every other byte of the file, so any truncation or corruption is
found before anything else is read.  :func:`save` writes a temporary file in the
target's directory, flushes and fsyncs it, renames it over the target with
``os.replace`` and fsyncs the directory: at every moment the target is either the
previous complete checkpoint or the new one.  :func:`load` checks the whole file
against the optimizer first and only then loads it (through the optimizer's own
``load_state_dict``), so a bad file raises :class:`CheckpointError` and leaves the
optimizer as it was.

The checkpoint holds the optimizer's state only; save the parameters themselves as
you save your model.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import secrets
import struct
from collections.abc import Mapping

import numpy as np

from ._version import __version__

__all__ = ["save", "load", "CheckpointError", "FORMAT_VERSION"]

MAGIC = b"FASTOPT\n"
FORMAT_VERSION = 1
_DIGEST = hashlib.sha256
_DIGEST_SIZE = _DIGEST().digest_size
_LENGTH = struct.Struct("<Q")
_DTYPES = {"float32": "<f4", "float64": "<f8"}


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, truncated or does not fit the
    optimizer it is loaded into."""


# -- what a checkpoint holds -----------------------------------------------------------

def _adapter(optimizer):
    """How to read and write `optimizer`'s state: fastopt's NumPy optimizers, or
    (when ``fastopt.torch`` has been imported) its torch optimizers."""
    from .optim import Optimizer
    if isinstance(optimizer, Optimizer):
        return _NumpyAdapter
    import sys
    fastopt_torch = sys.modules.get(__package__ + ".torch")
    if fastopt_torch is not None and isinstance(optimizer, fastopt_torch.Optimizer):
        return _TorchAdapter
    raise TypeError("optimizer must be a fastopt optimizer (fastopt.Adam, ..., or "
                    f"fastopt.torch.Adam, ...), got {type(optimizer).__name__}")


class _NumpyAdapter:
    @staticmethod
    def params(groups):
        """The parameters of `groups`, as NumPy arrays."""
        return [p for group in groups for p in group["params"]]

    @staticmethod
    def to_numpy(value):
        return value

    @staticmethod
    def step_to_int(step):
        return step

    @staticmethod
    def from_numpy(array):
        return array

    @staticmethod
    def int_to_step(step):
        return step

    @staticmethod
    def scalar_to_float(value):
        return float(value)

    @staticmethod
    def float_to_scalar(value):
        return value


class _TorchAdapter:
    @staticmethod
    def params(groups):
        return [p.detach().numpy() for group in groups for p in group["params"]]

    @staticmethod
    def to_numpy(value):
        return value.detach().numpy()

    @staticmethod
    def step_to_int(step):
        value = step.item() if hasattr(step, "item") else step
        return int(value)

    @staticmethod
    def from_numpy(array):
        import torch
        return torch.from_numpy(array.copy())

    @staticmethod
    def int_to_step(step):
        import torch
        from .torch import _get_scalar_dtype
        return torch.tensor(float(step), dtype=_get_scalar_dtype())

    @staticmethod
    def scalar_to_float(value):
        return float(value.item())

    @staticmethod
    def float_to_scalar(value):
        import torch
        from .torch import _get_scalar_dtype
        # a 0-d tensor in the dtype torch creates NAdam's mu_product (and the rest) in
        return torch.tensor(value, dtype=_get_scalar_dtype())


def _json_value(key, value):
    """`value` as JSON can hold it exactly, or TypeError naming `key`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not np.isfinite(value):
            raise TypeError(f"hyperparameter {key!r} is {value}, which a checkpoint cannot "
                            "hold")
        return value
    if isinstance(value, (tuple, list)):
        return [_json_value(key, v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d tensor/array
        return _json_value(key, value.item())
    raise TypeError(f"hyperparameter {key!r} has type {type(value).__name__}, which a "
                    "checkpoint cannot hold (use numbers, bools, strings or None)")


def _encode(optimizer):
    """The header (bytes) and the state buffers (arrays, in payload order)."""
    adapter = _adapter(optimizer)
    algorithm = optimizer.algorithm
    state_dict = optimizer.state_dict()
    params = adapter.params(optimizer.param_groups)
    groups = []
    for group, saved in zip(optimizer.param_groups, state_dict["param_groups"]):
        hyper = {key: _json_value(key, value) for key, value in saved.items()
                 if key not in ("params", "param_names")}
        groups.append({"hyperparameters": hyper,
                       "params": [{"shape": list(p.shape), "dtype": str(p.dtype)}
                                  for p in adapter.params([group])]})
    buffer_specs = {spec.name: spec for spec in algorithm.state}
    scalar_names = {spec.name for spec in algorithm.scalar_state}
    entries, arrays, offset = [], [], 0
    for index in sorted(state_dict["state"]):
        saved = state_dict["state"][index]
        param = params[index]
        entry = {"param": int(index), "buffers": []}
        scalars = {}
        for key, value in saved.items():
            if key == "step":
                entry["step"] = adapter.step_to_int(value)
                continue
            if value is None:
                continue
            if key in scalar_names:
                # hexadecimal: exact, and it holds inf and nan, which JSON cannot
                scalars[key] = float.hex(adapter.scalar_to_float(value))
                continue
            if key not in buffer_specs:
                raise ValueError(f"state[{index}] has key {key!r}, which "
                                 f"{algorithm.cls_name} does not keep")
            array = adapter.to_numpy(value)
            shape = buffer_specs[key].shape_for(param.shape)
            if array.shape != shape or array.dtype != param.dtype \
                    or not array.flags.c_contiguous:
                raise ValueError(f"state[{index}][{key!r}] does not match its parameter "
                                 f"(shape {array.shape} for {shape}, dtype, contiguity)")
            entry["buffers"].append({"name": key, "offset": offset, "nbytes": array.nbytes})
            arrays.append(array)
            offset += array.nbytes
        if scalars:
            entry["scalars"] = scalars
        entries.append(entry)
    header = {"format_version": FORMAT_VERSION, "fastopt_version": __version__,
              "algorithm": algorithm.name, "param_groups": groups, "state": entries,
              "payload_bytes": offset,
              # options only torch's optimizers have (foreach, ...): a NumPy optimizer
              # loading this file leaves them out of its groups
              "torch_options": sorted(getattr(type(optimizer), "_torch_options", {}))}
    return json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8"), arrays


def _chunks(header, arrays):
    """The file's bytes before the digest, as a sequence of bytes-like chunks."""
    yield MAGIC
    yield _LENGTH.pack(len(header))
    yield header
    for array in arrays:
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        yield memoryview(array).cast("B")


# -- writing ---------------------------------------------------------------------------

def save(optimizer, path) -> None:
    """Write `optimizer`'s state to `path`, atomically.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.torch.Optimizer
        Saved as it is now: algorithm, each group's hyperparameters, each parameter's
        step count and state buffers.  Do not step it from another thread meanwhile.
    path : str or os.PathLike
        The checkpoint file.  A crash or error at any moment leaves the file either
        as it was before the call or complete with the new state; a temporary file
        in the same directory is removed on error (a killed process can leave one
        behind, named ``.<file name>.<random>.tmp``; it is safe to delete).

    Raises
    ------
    TypeError
        If `optimizer` is not a fastopt optimizer, or a hyperparameter is something a
        checkpoint cannot hold; nothing is written.
    OSError
        If writing fails; the previous checkpoint, if any, is left in place.
    """
    header, arrays = _encode(optimizer)
    _atomic_write(os.fspath(path), _chunks(header, arrays))


def _atomic_write(path, chunks):
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}."
                                        f"{secrets.token_hex(6)}.tmp")
    # O_EXCL: never clobber someone else's file; mode 0o666 lets the umask decide
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            digest = _DIGEST()
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.write(digest.digest())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename still happened
    finally:
        os.close(descriptor)


# -- reading ---------------------------------------------------------------------------

def _read(path):
    """The header (dict) and payload (bytes) of a checkpoint whose digest checks out."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)!r}: {error}") from error
    name = os.fspath(path)
    fixed = len(MAGIC) + _LENGTH.size
    if len(data) < fixed + _DIGEST_SIZE or not data.startswith(MAGIC):
        if data[:len(MAGIC)] == MAGIC[:len(data)]:
            raise CheckpointError(f"{name!r} is truncated ({len(data)} bytes)")
        raise CheckpointError(f"{name!r} is not a fastopt checkpoint (bad magic bytes)")
    if _DIGEST(memoryview(data)[:-_DIGEST_SIZE]).digest() != data[-_DIGEST_SIZE:]:
        raise CheckpointError(f"{name!r} is corrupt or truncated: its SHA-256 checksum does "
                              "not match its contents")
    (header_length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if header_length > len(data) - fixed - _DIGEST_SIZE:
        raise CheckpointError(f"{name!r} is corrupt: header length {header_length} exceeds "
                              "the file")
    try:
        header = json.loads(data[fixed:fixed + header_length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{name!r} has an unreadable header: {error}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name!r} has an unreadable header: not a JSON object")
    payload = memoryview(data)[fixed + header_length:-_DIGEST_SIZE]
    return header, payload


def _field(mapping, key, kind, where):
    if not isinstance(mapping, dict) or key not in mapping:
        raise CheckpointError(f"checkpoint {where} lacks {key!r}")
    value = mapping[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise CheckpointError(f"checkpoint {where}[{key!r}] has the wrong type")
    return value


def _decode(header, payload, optimizer, adapter, name):
    """The optimizer's state dict from a verified file, after checking it fits."""
    version = _field(header, "format_version", int, "header")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{name!r} has format version {version}; this fastopt "
                              f"({__version__}) reads version {FORMAT_VERSION}")
    algorithm = _field(header, "algorithm", str, "header")
    if algorithm != optimizer.algorithm.name:
        raise CheckpointError(f"{name!r} holds a {algorithm!r} optimizer's state, not "
                              f"{optimizer.algorithm.name!r} ({type(optimizer).__name__})")
    groups = _field(header, "param_groups", list, "header")
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"{name!r} has {len(groups)} parameter groups; the optimizer "
                              f"has {len(optimizer.param_groups)}")
    params = adapter.params(optimizer.param_groups)
    torch_options = _field(header, "torch_options", list, "header")
    foreign = set(torch_options) if adapter is _NumpyAdapter else set()
    saved_groups, first = [], 0
    for g, (saved, group) in enumerate(zip(groups, optimizer.param_groups)):
        described = _field(saved, "params", list, f"param_groups[{g}]")
        if len(described) != len(group["params"]):
            raise CheckpointError(f"{name!r}: parameter group {g} has {len(described)} "
                                  f"parameters; the optimizer's has {len(group['params'])}")
        for offset, description in enumerate(described):
            index = first + offset
            where = f"param_groups[{g}]['params'][{offset}]"
            shape = tuple(_field(description, "shape", list, where))
            dtype = _field(description, "dtype", str, where)
            if shape != params[index].shape:
                raise CheckpointError(f"{name!r}: parameter {index} has shape {shape} in the "
                                      f"checkpoint but {params[index].shape} in the optimizer")
            if dtype != str(params[index].dtype):
                raise CheckpointError(f"{name!r}: parameter {index} has dtype {dtype} in the "
                                      f"checkpoint but {params[index].dtype} in the optimizer")
        hyper = {key: value for key, value in
                 _field(saved, "hyperparameters", dict, f"param_groups[{g}]").items()
                 if key not in foreign}
        for key, value in hyper.items():
            if isinstance(value, list) and isinstance(group.get(key), tuple):
                hyper[key] = tuple(value)
        hyper["params"] = list(range(first, first + len(described)))
        saved_groups.append(hyper)
        first += len(described)
    payload_bytes = _field(header, "payload_bytes", int, "header")
    if payload_bytes != len(payload):
        raise CheckpointError(f"{name!r}: header says {payload_bytes} bytes of state, the "
                              f"file holds {len(payload)}")
    buffer_specs = {spec.name: spec for spec in optimizer.algorithm.state}
    scalar_names = {spec.name for spec in optimizer.algorithm.scalar_state}
    state, covered = {}, 0
    for entry in _field(header, "state", list, "header"):
        index = _field(entry, "param", int, "state entry")
        if index >= len(params) or index in state:
            raise CheckpointError(f"{name!r}: state for parameter {index}, which is out of "
                                  "range or repeated")
        loaded = {}
        if "step" in entry:
            loaded["step"] = adapter.int_to_step(_field(entry, "step", int, f"state[{index}]"))
        param = params[index]
        for buffer in _field(entry, "buffers", list, f"state[{index}]"):
            key = _field(buffer, "name", str, f"state[{index}] buffer")
            offset = _field(buffer, "offset", int, f"state[{index}][{key!r}]")
            nbytes = _field(buffer, "nbytes", int, f"state[{index}][{key!r}]")
            if key not in buffer_specs:
                raise CheckpointError(f"{name!r}: state[{index}] has unknown key {key!r} for "
                                      f"{type(optimizer).__name__}")
            shape = buffer_specs[key].shape_for(param.shape)
            if shape is None:
                raise CheckpointError(f"{name!r}: state[{index}][{key!r}] is not used by "
                                      f"parameter {index} of shape {param.shape}")
            count = math.prod(shape)
            if offset != covered or nbytes != count * param.itemsize \
                    or offset + nbytes > len(payload):
                raise CheckpointError(f"{name!r}: state[{index}][{key!r}] has offset {offset} "
                                      f"and {nbytes} bytes, which do not fit parameter {index}")
            covered += nbytes
            array = np.frombuffer(payload, dtype=_DTYPES[str(param.dtype)],
                                  count=count, offset=offset)
            loaded[key] = adapter.from_numpy(
                array.astype(param.dtype, copy=False).reshape(shape))
        scalars = entry.get("scalars", {})
        if not isinstance(scalars, dict):
            raise CheckpointError(f"checkpoint state[{index}]['scalars'] has the wrong type")
        for key, text in scalars.items():
            if key not in scalar_names:
                raise CheckpointError(f"{name!r}: state[{index}] has unknown key {key!r} for "
                                      f"{type(optimizer).__name__}")
            try:
                value = float.fromhex(text)
            except (TypeError, ValueError):
                raise CheckpointError(f"checkpoint state[{index}][{key!r}] is not a "
                                      f"hexadecimal float: {text!r}") from None
            loaded[key] = adapter.float_to_scalar(value)
        missing = sorted(scalar_names - set(scalars))
        if missing:  # torch's load_state_dict would not notice; the next step would
            raise CheckpointError(f"{name!r}: state[{index}] lacks the scalar state "
                                  f"{missing} of {type(optimizer).__name__}")
        state[index] = loaded
    if covered != len(payload):
        raise CheckpointError(f"{name!r}: {len(payload) - covered} bytes of state belong to "
                              "no buffer")
    return {"state": state, "param_groups": saved_groups}


def load(optimizer, path) -> None:
    """Load a checkpoint written by :func:`save` into `optimizer`.

    The whole file is checked first: its checksum, format version, algorithm, group
    count and sizes, every parameter's shape and dtype, every buffer's place in the
    file, then (through the optimizer's ``load_state_dict``) the hyperparameters and
    state keys.  Only then is the optimizer changed; after an error it is as it was.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.torch.Optimizer
        Built over parameters of the same shapes and dtypes, in the same groups, as
        the optimizer that was saved.
    path : str or os.PathLike

    Raises
    ------
    CheckpointError
        (a ValueError) if the file is missing, truncated, corrupt, from an unknown
        format version, or for another algorithm or other parameters.
    TypeError, ValueError
        From ``load_state_dict``, if a hyperparameter or state key is invalid.
    """
    adapter = _adapter(optimizer)
    name = os.fspath(path)
    header, payload = _read(path)
    try:
        state_dict = _decode(header, payload, optimizer, adapter, name)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{name!r} has a malformed header: {error}") from None
    optimizer.load_state_dict(state_dict)
