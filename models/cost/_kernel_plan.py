"""Which kernels onnxruntime's CPU provider runs for a network at given channel counts.

It mirrors the choices onnxruntime (1.2x-1.3x) makes at optimization level ``all``: a
convolution runs on the blocked NCHWc layout with its channels padded to the block when
its channels allow (:meth:`KernelPlanner.conv_is_blocked`; a dense one narrower than the
block reads its input unblocked), else on the plain layout; ReLU, sigmoid, tanh,
SiLU and same-shaped adds stay blocked when their inputs are; a residual add is fused
into the convolution producing one of its inputs (and a ReLU after it too); poolings
are blocked only when their channels are a multiple of the block; everything else
(per-channel scales, other functions, reshapes, linear layers) reads the plain layout.
A tensor gets one ``ReorderInput`` when a blocked kernel reads a plain tensor and one
``ReorderOutput`` when a plain kernel reads a blocked one. With a block of 1 (no NCHWc
kernels) every op runs plain and only activations fuse into convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from models.cost._layer_shapes import LayerShape
from models.cost._network import Network, OpNode

__all__ = ["Kernel", "KernelPlanner"]

Kernel = tuple[LayerShape, tuple[int, ...]]
"""A kernel: its template (a :class:`LayerShape` with zero channels; zero groups for a
depthwise convolution) and its channel coordinates (in, out) or (channels,)."""

CHANNEL_ALIGNMENT = 4
"""A dense convolution at least a block wide, or a depthwise one, runs blocked only when
its input channels are a multiple of this (whatever the block: measured with blocks of 8
and 16, onnxruntime 1.32); others run on the plain layout."""

_BLOCKED_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "SiLU"})
_ADD_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh"})


def _padded(channels: int, block: int) -> int:
    return -(-channels // block) * block


def instantiate(template: LayerShape, coords: tuple[int, ...]) -> LayerShape:
    """Return the full :class:`LayerShape` of a template at channel coordinates."""
    if len(coords) == 2:
        return replace(template, in_channels=coords[0], out_channels=coords[1])
    (channels,) = coords
    groups = channels if template.op == "conv" and template.groups == 0 else template.groups
    return replace(template, in_channels=channels, out_channels=channels, groups=groups)


class KernelPlanner:
    """Lists a network's kernels for any channel counts, and every kernel any plan can use.

    Instances cache templates and are safe to share between threads (the cache only ever
    gains equal values).
    """

    def __init__(self, network: Network, block: int) -> None:
        self.network = network
        self.block = block
        self._templates: dict[tuple[object, ...], LayerShape] = {}

    def template(
        self, index: int, layout: str, function: str | None = None, residual: bool = False
    ) -> LayerShape:
        """Return the template of op ``index`` on ``layout``, with another fused
        ``function`` than the op's own or a fused residual add."""
        key = (index, layout, function, residual)
        found = self._templates.get(key)
        if found is None:
            found = self._build_template(index, layout, function, residual)
            self._templates[key] = found
        return found

    def reorder(self, tensor: int, op: str) -> LayerShape:
        """Return the template of a ``reorder_in`` or ``reorder_out`` of ``tensor``."""
        key = (-tensor - 1, op, None, False)
        found = self._templates.get(key)
        if found is None:
            t = self.network.tensors[tensor]
            found = LayerShape(op, 0, 0, t.height, t.width, block=self.block)
            self._templates[key] = found
        return found

    def _build_template(
        self, index: int, layout: str, function: str | None, residual: bool
    ) -> LayerShape:
        op = self.network.ops[index]
        source = self.network.tensors[op.inputs[0]]
        if function is None:
            function = {"add": "Add", "mul": "Mul"}.get(op.op, op.function)
        return LayerShape(
            {"mul": "add"}.get(op.op, op.op),
            0,
            0,
            source.height,
            source.width,
            kernel=op.kernel,
            stride=op.stride,
            padding=op.padding,
            dilation=op.dilation,
            groups=0 if op.depthwise else op.groups,
            function=function,
            residual=residual,
            layout=layout,
            block=self.block if layout == "nchwc" else 1,
        )

    def coords(self, template: LayerShape, cin: int, cout: int) -> tuple[int, ...]:
        """Return a kernel's channel coordinates for logical channels ``cin`` -> ``cout``."""
        block = self.block
        if template.op == "linear" or (template.op == "conv" and template.groups != 0):
            if template.layout == "nchwc":
                return (cin if cin < block else _padded(cin, block), _padded(cout, block))
            return cin, cout
        if template.layout == "nchwc":
            return (_padded(cin, block),)
        return (cin,)

    def kernels(self, channels: Sequence[int], network: Network | None = None) -> list[Kernel]:
        """Return the kernels onnxruntime runs when tensor ``i`` has ``channels[i]``: of
        this planner's network, or of ``network``, the same with blocks removed
        (:meth:`Network.without`: the same ops, some of them ``removed``)."""
        return _Run(self, channels, network or self.network).kernels()

    def conv_is_blocked(self, op: OpNode, cin: int, cout: int) -> bool:
        """Return whether onnxruntime runs this convolution on the NCHWc layout: a dense
        one narrower than the block or with input channels a multiple of
        :data:`CHANNEL_ALIGNMENT`, a depthwise one with such channels, a grouped one whose
        groups' input and output channels are multiples of the block."""
        if self.block == 1:
            return False
        if op.groups == 1:
            return cin < self.block or cin % CHANNEL_ALIGNMENT == 0
        if op.depthwise:
            return cin % CHANNEL_ALIGNMENT == 0
        g, b = op.groups, self.block
        return (cin // g) % b == 0 and (cout // g) % b == 0

    def variants(
        self, values: Sequence[set[int]], networks: Sequence[Network] = ()
    ) -> dict[LayerShape, list[set[int]]]:
        """Return every kernel template some plan can use, with its reachable coordinates.

        An over-approximation: every layout an op could be given is listed, whether
        or not some plan really gives it.

        Args:
            values: for each tensor, the channel counts plans can give it.
            networks: this planner's network with blocks removed
                (:meth:`Network.without`), whose fusions may differ; their variants are
                added to the full network's.

        Returns:
            template -> one set of coordinate values per axis.
        """
        found: dict[LayerShape, list[set[int]]] = {}
        for net in (self.network, *networks):
            self._add_variants(net, values, found)
        return found

    def _add_variants(
        self, net: Network, values: Sequence[set[int]], found: dict[LayerShape, list[set[int]]]
    ) -> None:
        block = self.block
        blocked = "nchwc" if block > 1 else "nchw"

        def add(template: LayerShape, cin: set[int], cout: set[int]) -> None:
            if len(self.coords(template, 1, 1)) == 2:
                axes = [{self.coords(template, c, 1)[0] for c in cin}]
                axes.append({self.coords(template, 1, d)[1] for d in cout})
            else:
                axes = [{self.coords(template, c, c)[0] for c in cin}]
            for mine, theirs in zip(
                found.setdefault(template, [set() for _ in axes]), axes, strict=True
            ):
                mine |= theirs

        for t, tensor in enumerate(net.tensors):
            if block > 1 and tensor.spatial:
                add(self.reorder(t, "reorder_out"), values[t], set())
                # onnxruntime's ReorderInput takes whole groups of 4 channels only
                whole = {c for c in values[t] if c % 4 == 0}
                if whole:
                    add(self.reorder(t, "reorder_in"), whole, set())
        for i, op in enumerate(net.ops):
            if op.op == "removed":
                continue
            cin, cout = values[op.inputs[0]], values[op.output]
            if op.op == "conv":
                for template, ins, outs in self._conv_variants(net, i, op, cin, cout):
                    add(template, ins, outs)
            elif op.op in ("unary", "add", "mul"):
                if block > 1 and (op.op != "unary" or op.function in _BLOCKED_UNARY):
                    add(self.template(i, blocked), cin, cin)
                add(self.template(i, "nchw"), cin, cin)
            elif op.op == "pool":
                aligned = {c for c in cin if block > 1 and c % block == 0}
                if aligned:
                    add(self.template(i, blocked), aligned, aligned)
                add(self.template(i, "nchw"), cin - aligned or cin, set())
            elif op.op in ("scale", "linear"):
                add(self.template(i, "nchw"), cin, cout)

    def _conv_variants(
        self, net: Network, i: int, op: OpNode, cin: set[int], cout: set[int]
    ) -> list[tuple[LayerShape, set[int], set[int]]]:
        block = self.block
        fusions: list[tuple[str, bool]] = [(op.function, False)]
        reader = _sole_reader(net, op.output)
        if block > 1 and not op.function and reader is not None and reader.op == "add":
            fusions.append(("", True))
            after = _sole_reader(net, reader.output)
            if after is not None and after.op == "unary" and after.function in _ADD_ACTIVATIONS:
                fusions.append((after.function, True))
        if block == 1:
            blocked_in, blocked_out, plain_in, plain_out = set(), set(), cin, cout
        elif op.groups == 1 or op.depthwise:  # the input channels alone decide
            blocked_in = {c for c in cin if self.conv_is_blocked(op, c, c)}
            plain_in = cin - blocked_in
            blocked_out, plain_out = (cout if blocked_in else set()), (cout if plain_in else set())
        else:
            pairs = {(c, d) for c in cin for d in cout if self.conv_is_blocked(op, c, d)}
            blocked_in, blocked_out = {c for c, _ in pairs}, {d for _, d in pairs}
            plain_in, plain_out = cin - blocked_in or cin, cout - blocked_out or cout
        found: list[tuple[LayerShape, set[int], set[int]]] = []
        if blocked_in:
            narrow = {c for c in blocked_in if c < block and op.groups == 1}
            for function, residual in fusions:
                template = self.template(i, "nchwc", function, residual)
                for ins in (narrow, blocked_in - narrow):
                    if ins:
                        found.append((template, ins, blocked_out))
        if plain_in:
            found.append((self.template(i, "nchw", op.function), plain_in, plain_out))
        return found


def _sole_reader(network: Network, tensor: int) -> OpNode | None:
    if network.uses[tensor] != 1:
        return None
    for op in network.ops:
        if tensor in op.inputs:
            return op
    return None


class _Run:
    """One pass over the ops at given channel counts (see the module docstring)."""

    def __init__(self, planner: KernelPlanner, channels: Sequence[int], network: Network) -> None:
        self.p = planner
        self.net = network
        self.ch = channels
        count = len(channels)
        self.blocked = [False] * count  # the tensor is produced on the NCHWc layout
        self.has_plain = [False] * count  # ... and a ReorderOutput copy exists
        self.has_blocked = [False] * count  # a plain tensor's ReorderInput copy exists
        self.fusable: dict[int, list[object]] = {}  # tensor -> its conv kernel, open to fusion
        self.out: list[list[object]] = []

    def emit(self, template: LayerShape, cin: int, cout: int, index: int = -1) -> list[object]:
        kernel: list[object] = [template, self.p.coords(template, cin, cout), index]
        self.out.append(kernel)
        return kernel

    def plain(self, t: int) -> None:
        if self.blocked[t] and not self.has_plain[t]:
            self.has_plain[t] = True
            self.emit(self.p.reorder(t, "reorder_out"), self.ch[t], self.ch[t])

    def to_blocked(self, t: int) -> None:
        if not self.blocked[t] and not self.has_blocked[t]:
            self.has_blocked[t] = True
            self.emit(self.p.reorder(t, "reorder_in"), self.ch[t], self.ch[t])

    def kernels(self) -> list[Kernel]:
        net, p = self.net, self.p
        block = p.block
        for i, op in enumerate(net.ops):
            if op.op == "removed":
                continue
            x, y = op.inputs[0], op.output
            cin, cout = self.ch[x], self.ch[y]
            if op.op == "conv":
                self.conv(i, op, cin, cout)
            elif op.op == "unary":
                self.unary(i, op, cin)
            elif op.op in ("add", "mul"):
                a, b = op.inputs
                if block > 1 and self.blocked[a] and self.blocked[b]:
                    self.blocked[y] = True
                    if op.op == "add" and self.fuse_add(a, b, y):
                        continue
                    self.emit(p.template(i, "nchwc"), cin, cin)
                else:
                    self.plain(a)
                    self.plain(b)
                    self.emit(p.template(i, "nchw"), cin, cin)
            elif op.op == "pool":
                global_pool = op.function.startswith("Global")
                if block > 1 and cin % block == 0 and (self.blocked[x] or not global_pool):
                    self.to_blocked(x)
                    self.blocked[y] = True
                    self.emit(p.template(i, "nchwc"), cin, cin)
                else:
                    self.plain(x)
                    self.emit(p.template(i, "nchw"), cin, cin)
            else:
                for t in op.inputs:
                    self.plain(t)
                if op.op in ("scale", "linear"):
                    self.emit(p.template(i, "nchw"), cin, cout)
        for t in net.outputs:
            self.plain(t)
        return [(k[0], k[1]) for k in self.out]  # type: ignore[misc]

    def conv(self, i: int, op: OpNode, cin: int, cout: int) -> None:
        x, y = op.inputs[0], op.output
        if not self.p.conv_is_blocked(op, cin, cout):
            self.plain(x)
            self.emit(self.p.template(i, "nchw", op.function), cin, cout)
            return
        if op.groups == 1 and not op.depthwise and cin < self.p.block:
            self.plain(x)
        else:
            self.to_blocked(x)
        kernel = self.emit(self.p.template(i, "nchwc", op.function), cin, cout, i)
        self.blocked[y] = True
        if not op.function and self.net.uses[y] == 1:
            self.fusable[y] = kernel

    def fuse_add(self, a: int, b: int, y: int) -> bool:
        for t in (a, b):
            kernel = self.fusable.pop(t, None)
            if kernel is not None:
                index = kernel[2]
                assert isinstance(index, int)
                kernel[0] = self.p.template(index, "nchwc", "", True)
                if self.net.uses[y] == 1:
                    self.fusable[y] = kernel
                return True
        return False

    def unary(self, i: int, op: OpNode, cin: int) -> None:
        x, y = op.inputs[0], op.output
        if not self.blocked[x]:
            self.emit(self.p.template(i, "nchw"), cin, cin)
            return
        kernel = self.fusable.pop(x, None)
        if kernel is not None and op.function in _ADD_ACTIVATIONS:
            index = kernel[2]
            assert isinstance(index, int)
            kernel[0] = self.p.template(index, "nchwc", op.function, True)
            self.blocked[y] = True
        elif op.function in _BLOCKED_UNARY:
            self.blocked[y] = True
            self.emit(self.p.template(i, "nchwc"), cin, cin)
        else:
            self.plain(x)
            self.emit(self.p.template(i, "nchw"), cin, cin)
