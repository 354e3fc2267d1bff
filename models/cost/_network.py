"""The network as the latency table sees it: its ops in order, and how many channels of
each tensor every pruning group owns. Independent of any model object, and JSON-able."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from models.errors import ModelsError

__all__ = ["Network", "OpNode", "TensorInfo"]


@dataclass(frozen=True)
class TensorInfo:
    """One activation tensor of the unpruned network.

    Attributes:
        channels: its channels (features, for a 2-D tensor) in the unpruned network.
        by_group: ``(group, n)``: ``n`` of the channels shrink with that group, as in
            :class:`~models.prune.DimCoverage`; the rest never change.
        height: spatial height (1 for a 2-D tensor).
        width: spatial width.
        spatial: True for an (N, C, H, W) tensor.
    """

    channels: int
    by_group: tuple[tuple[str, int], ...] = ()
    height: int = 1
    width: int = 1
    spatial: bool = True


@dataclass(frozen=True)
class OpNode:
    """One op of the network after the fusions onnxruntime always makes.

    Attributes:
        op: ``conv``, ``linear``, ``unary``, ``add`` (same-shaped tensors), ``mul``
            (same-shaped tensors), ``scale`` (a tensor times a per-channel vector),
            ``pool``, ``reshape`` (free, but reads the plain layout), ``other``
            (an op the table does not time) or ``removed`` (in a block
            :meth:`Network.without` removed: it reads nothing and runs no kernel).
        inputs: indices of the activation tensors it reads (for a ``scale``, the scaled
            tensor first, then the per-channel vector).
        output: index of the tensor it writes.
        function: a convolution's fused activation; a unary op's function (``SiLU``
            for ``x * sigmoid(x)``); a pooling's or an untimed op's ONNX type.
        kernel: (kh, kw) of a convolution or pooling.
        stride: (sh, sw).
        padding: (top, left, bottom, right).
        dilation: (dh, dw).
        groups: a convolution's groups in the unpruned network.
        depthwise: a convolution with one filter per channel (its groups follow them).
        scope: the module path of the op (a convolution's or linear layer's own module;
            for other ops the innermost module the exporter named), "" if unknown.
            What :meth:`Network.without` removes blocks by.
    """

    op: str
    inputs: tuple[int, ...]
    output: int
    function: str = ""
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    depthwise: bool = False
    scope: str = ""

    def inside(self, module: str) -> bool:
        """Return whether the op runs inside ``module`` (a module path)."""
        return self.scope == module or self.scope.startswith(module + ".")


@dataclass(frozen=True)
class Network:
    """The ops of one network and its tensors, independent of any model object.

    Attributes:
        tensors: every activation tensor; ``tensors[0]`` is the input.
        ops: the ops in execution order.
        outputs: indices of the network's output tensors.
        uses: for each tensor, how many ops read it (plus one for a network output).
        scoped: the ops' ``scope`` were read from the export and agree with the modules
            the convolutions were matched to (:meth:`without` needs them).
    """

    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpNode, ...]
    outputs: tuple[int, ...]
    uses: tuple[int, ...]
    scoped: bool = False

    def without(self, blocks: Iterable[str]) -> Network:
        """Return the network with the residual ``blocks`` (module paths) removed, as
        ``models.prune.remove_blocks`` leaves the model: whatever read a block's output
        reads its input instead, and each of its ops becomes a ``removed`` op that reads
        nothing and runs no kernel. Op and tensor indices are unchanged, so that a
        :class:`~models.cost._kernel_plan.KernelPlanner` of this network serves both.

        Raises:
            ModelsError: the ops do not know their modules (an export whose node names
                carry no scopes), or a block has no ops or does not read exactly one
                tensor from outside itself (not a block that can go whole).
        """
        removed = list(dict.fromkeys(blocks))
        if not removed:
            return self
        if not self.scoped:
            raise ModelsError(
                "this network's ops do not know their modules (the ONNX export named no "
                "scopes), so the table cannot predict a plan that removes blocks"
            )
        spans: list[list[int]] = []
        for block in sorted(removed, key=len):  # an outer block first: it takes the inner
            if any(block.startswith(outer + ".") for outer in removed if outer != block):
                continue
            inside = [i for i, op in enumerate(self.ops) if op.inside(block)]
            if not inside:
                raise ModelsError(f"the network has no ops in block {block!r}")
            spans.append(inside)
        alias: dict[int, int] = {}
        gone: set[int] = set()
        for inside in sorted(spans):  # in execution order: a block may read one removed
            made = {self.ops[i].output for i in inside}
            read = {t for i in inside for t in self.ops[i].inputs if t not in made}
            if len(read) != 1:
                raise ModelsError(
                    f"block {self.ops[inside[0]].scope!r} reads {len(read)} tensors from "
                    "outside it; only a block with one input can be removed"
                )
            (source,) = read
            # in execution order, so a block right after a removed one reads that one's input
            alias[self.ops[inside[-1]].output] = alias.get(source, source)
            gone.update(inside)
        ops = tuple(
            OpNode("removed", (), op.output, scope=op.scope)
            if i in gone
            else replace(op, inputs=tuple(alias.get(t, t) for t in op.inputs))
            for i, op in enumerate(self.ops)
        )
        outputs = tuple(alias.get(t, t) for t in self.outputs)
        uses = [0] * len(self.tensors)
        for op in ops:
            for t in op.inputs:
                uses[t] += 1
        for t in outputs:
            uses[t] += 1
        return Network(self.tensors, ops, outputs, tuple(uses), scoped=True)

    @property
    def untimed(self) -> dict[str, int]:
        """ONNX op types the table does not time, with how often each occurs."""
        return dict(Counter(op.function for op in self.ops if op.op == "other"))

    def to_dict(self) -> dict[str, Any]:
        """Return the network as JSON-able values."""
        return {
            "tensors": [_plain(asdict(t)) for t in self.tensors],
            "ops": [_plain(asdict(o)) for o in self.ops],
            "outputs": list(self.outputs),
            "uses": list(self.uses),
            "scoped": self.scoped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        """Rebuild a network written by :meth:`to_dict`."""
        tensors = tuple(_record(TensorInfo, t) for t in data["tensors"])
        ops = tuple(_record(OpNode, o) for o in data["ops"])
        return cls(
            tensors,
            ops,
            tuple(data["outputs"]),
            tuple(data["uses"]),
            scoped=bool(data.get("scoped", False)),
        )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
        for k, v in values.items()
    }


def _record(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    values = {}
    for key, value in data.items():
        if key in names:
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[key] = value
    return cls(**values)
