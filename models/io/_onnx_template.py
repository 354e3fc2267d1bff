"""ONNX for latency without running the exporter: one model's graph, another's weights.

A search that measures every candidate's latency with onnxruntime would export each one
to ONNX first, and the TorchScript exporter traces and rewrites the whole graph every
time (about 70 ms for a pruned resnet20 on one core, more than the timed runs). A
candidate pruned by channels has the unpruned model's graph, only with narrower tensors,
so :class:`OnnxTemplate` exports the model once and then serializes each candidate as
that graph with the candidate's own tensors in place of the initializers (about 2 ms).
A candidate whose blocks were removed whole (``nn.Identity`` in their place, see
:func:`models.prune.remove_blocks`) gets the graph without those blocks' nodes: the
exporter names every node after the module it came from (``/layer1/layer1.2/...``), and
the block's one input goes where its one output went.

The template is exported with BatchNormalization left as it is (``TrainingMode.PRESERVE``
on a model in eval mode, no constant folding), so that every initializer is a tensor of
the model's ``state_dict`` under the same name; the exporter's own Conv+BN folding would
have produced new, unnamed tensors. onnxruntime folds them again when it loads the graph
(``ORT_ENABLE_ALL``, as latency is measured), so the timed graph is the same. The
template is exported from a copy whose tensors are distinct random values, so that the
exporter's de-duplication of equal initializers cannot merge two of them.

Nothing is trusted by construction: :meth:`OnnxTemplate.bytes_for` runs each graph it
makes once in onnxruntime and compares the logits with the candidate's own in torch. A
model the graph does not fit (a removed block, a layer the candidate lacks, a shape the
exporter baked into a constant) gets None, and the caller exports it the usual way; a
template that produced a wrong graph once is not used again. A caller that runs the graph
itself anyway (a latency meter on this machine) asks for it unchecked and checks it in its
own session with :meth:`OnnxTemplate.output_check`, saving a session and a run
(:func:`models.cost.measure_latency`'s ``onnx_check``); it :meth:`~OnnxTemplate.discard` s
the template where the check fails.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from models.io._export import (
    _DEFAULT_ATOL,
    _TRACE_BATCH,
    INPUT_NAME,
    OUTPUT_NAME,
    _eval_mode,
    _example,
    _onnx_legacy,
)

__all__ = ["OnnxTemplate"]

logger = logging.getLogger(__name__)

_TEMPLATE_SEED = 0
_CHECK_BATCH = 1


class OnnxTemplate:
    """One model's ONNX graph, reusable for every model with the same structure.

    Build it with :meth:`of`; :meth:`bytes_for` returns a checked ONNX export of a
    candidate (or an unchecked one, for a caller that checks it with
    :meth:`output_check`), or None where the template does not fit it. Not thread-safe
    (a latency meter is called from one thread at a time).
    """

    def __init__(self, proto: onnx.ModelProto, input_shape: Sequence[int]) -> None:
        self._names = [init.name for init in proto.graph.initializer]
        self._dtypes = {init.name: init.data_type for init in proto.graph.initializer}
        self._proto = proto  # the graph only: each candidate brings its own tensors
        del self._proto.graph.initializer[:]
        self._input_shape = tuple(input_shape)
        self.usable = True
        """False once the template produced a graph that did not match its model."""

    @classmethod
    def of(cls, model: nn.Module, input_shape: Sequence[int]) -> OnnxTemplate | None:
        """Return the template of ``model``'s graph, or None where one cannot be made
        (the exporter fails, or an initializer is not a tensor of the ``state_dict``,
        e.g. a constant the exporter folded)."""
        stand_in = _distinct_copy(model)
        try:
            proto = onnx.load_from_string(_export_unfolded(stand_in, input_shape))
        except Exception as exc:  # the exporter raises many unrelated types
            logger.debug("no ONNX template: the export failed (%s)", exc)
            return None
        state = stand_in.state_dict()
        foreign = [init.name for init in proto.graph.initializer if init.name not in state]
        if foreign:
            logger.debug("no ONNX template: initializers %s are not model tensors", foreign[:3])
            return None
        return cls(proto, input_shape)

    def bytes_for(self, model: nn.Module, *, checked: bool = True) -> bytes | None:
        """Return ``model`` as ONNX (input ``"input"``, output ``"logits"``, dynamic batch),
        checked against torch on a seeded input; None where the template does not fit
        it (then export it with :func:`models.io.onnx_model_bytes`).

        ``checked=False`` skips the run in onnxruntime: the caller must check the graph
        with :meth:`output_check` before it uses it (and :meth:`discard` the template if
        the check fails or onnxruntime refuses the graph)."""
        if not self.usable:
            return None
        state = model.state_dict()
        removed = _removed_blocks(model, [name for name in self._names if name not in state])
        if removed is None:
            return None
        proto = onnx.ModelProto()
        proto.CopyFrom(self._proto)
        tensors = set(self._names)
        if not all(_bypass(proto.graph, block, tensors) for block in removed):
            return None
        read = {name for node in proto.graph.node for name in node.input}
        for name in self._names:
            if name not in read:
                continue  # a removed block's
            tensor = state.get(name)
            if tensor is None or tensor.device.type != "cpu":
                return None
            try:
                initializer = numpy_helper.from_array(tensor.detach().numpy(), name)
            except TypeError:  # a dtype numpy lacks (bfloat16): the exporter handles it
                return None
            if initializer.data_type != self._dtypes[name]:
                return None
            proto.graph.initializer.append(initializer)
        data = proto.SerializeToString()
        if checked and not self._matches(model, data):
            self.discard("it did not reproduce a candidate's outputs")
            return None
        return data

    def output_check(self, model: nn.Module) -> Callable[[np.ndarray, np.ndarray], bool]:
        """Return ``check(x, output)``: whether ``output``, a graph's logits on the input
        ``x``, are ``model``'s own in torch (eval mode), within the tolerance every export
        is checked with."""

        def check(x: np.ndarray, output: np.ndarray) -> bool:
            with _eval_mode(model), torch.inference_mode():
                reference = model(torch.from_numpy(x)).numpy()
            if output.shape != reference.shape:
                return False
            scale = max(1.0, float(np.abs(reference).max()))  # as the exports are checked
            return bool(np.allclose(output, reference, rtol=0.0, atol=_DEFAULT_ATOL * scale))

        return check

    def discard(self, reason: str) -> None:
        """Stop using the template: it made a graph that did not compute its model
        (``reason`` says how that showed; logged as a warning)."""
        if self.usable:
            logger.warning(
                "the ONNX template is not used any more (%s); candidates are exported one "
                "by one from now on",
                reason,
            )
        self.usable = False

    def _matches(self, model: nn.Module, data: bytes) -> bool:
        """Return whether the graph ``data`` computes ``model``'s logits."""
        x = _example(self._input_shape, _CHECK_BATCH).numpy()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        except Exception as exc:  # onnxruntime's own exception types
            logger.debug("the ONNX template does not fit the model: %s", exc)
            return False
        return self.output_check(model)(x, np.asarray(out))


def _removed_blocks(model: nn.Module, missing: Sequence[str]) -> set[str] | None:
    """Return the module paths ``model`` has replaced by ``nn.Identity`` that account
    for the tensors it lacks (``missing``), or None where one is not so accounted for."""
    blocks: set[str] = set()
    for name in missing:
        parts = name.split(".")[:-1]
        for end in range(1, len(parts) + 1):
            path = ".".join(parts[:end])
            try:
                module = model.get_submodule(path)
            except AttributeError:
                return None
            if isinstance(module, nn.Identity):
                blocks.add(path)
                break
        else:
            return None
    return blocks


def _bypass(graph: onnx.GraphProto, block: str, tensors: set[str]) -> bool:
    """Remove the nodes the exporter made for module ``block`` (named under its scope,
    ``/a/a.b/`` for ``a.b``) and give their one input to whatever read their one output.

    ``tensors`` are the model's tensors (initializers). Returns False, leaving the graph
    unchanged, where the block is not such a section of the graph (no nodes, several
    inputs or outputs, or the model's output itself).
    """
    parts = block.split(".")
    scope = "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"
    inside = [node for node in graph.node if node.name.startswith(scope)]
    made = {name for node in inside for name in node.output}
    entering = {
        name
        for node in inside
        for name in node.input
        if name and name not in made and name not in tensors
    }
    leaving = {
        name
        for node in graph.node
        if not node.name.startswith(scope)
        for name in node.input
        if name in made
    }
    if not inside or len(entering) != 1 or len(leaving) != 1:
        return False
    if made & {output.name for output in graph.output}:
        return False
    (source,), (target,) = entering, leaving
    kept = [node for node in graph.node if not node.name.startswith(scope)]
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == target:
                node.input[i] = source
    return True


def _distinct_copy(model: nn.Module) -> nn.Module:
    """Return a CPU copy of ``model`` with every floating tensor random and positive
    (distinct, so the exporter merges none; positive, so BatchNorm variances are valid)."""
    stand_in = copy.deepcopy(model).cpu()
    generator = torch.Generator().manual_seed(_TEMPLATE_SEED)
    with torch.no_grad():
        for tensor in stand_in.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return stand_in


def _export_unfolded(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """Return the ONNX of ``model`` with every initializer a ``state_dict`` tensor."""
    with _eval_mode(model):
        return _onnx_legacy(model, _example(input_shape, _TRACE_BATCH), None, unfolded=True)
