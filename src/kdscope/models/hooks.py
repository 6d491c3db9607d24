"""Address intermediate layers by module path with context-managed forward hooks.

Models are never edited to expose features: :func:`capture` registers forward hooks on the
modules named by dotted paths (``"stage2"``, ``"features.3"``) and removes them on exit, also when
the body raises, so no hook outlives its use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from kdscope.errors import KdscopeError


@dataclass
class Outputs:
    """A model's logits and the outputs of the modules named in ``features`` (by path)."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


def module_paths(model: nn.Module) -> list[str]:
    """All addressable module paths of ``model`` (the root module has no path)."""
    return [name for name, _ in model.named_modules() if name]


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; an unknown path is a user error listing valid ones, and
    so is any path of a TorchScript model (its layers run no Python hooks)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise KdscopeError(
            f"layer {path!r} of a TorchScript model cannot be read: TorchScript runs no Python "
            "hooks inside it; give the model as a checkpoint with its architecture"
        )
    modules = dict(model.named_modules())
    if path not in modules or not path:
        roles = getattr(model, "roles", {})
        hint = ", ".join(list(roles) + module_paths(model)[:40])
        raise KdscopeError(f"unknown layer {path!r} in {type(model).__name__} (layers: {hint})")
    return modules[path]


def resolve_layer(model: nn.Module, layer: str) -> str:
    """Map a role name declared by the model (e.g. ``"middle"``) or a module path to a path."""
    roles: dict[str, str] = getattr(model, "roles", {})
    path = roles.get(layer, layer)
    get_module(model, path)
    return path


@contextmanager
def capture(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, every forward pass stores the output of each module in ``paths``.

    Yields a dict that is filled (overwritten) by each forward pass; the hooks are removed when
    the block exits, whatever happens inside it.
    """
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for path in dict.fromkeys(paths):
            module = get_module(model, path)

            def hook(_m: nn.Module, _inp: object, out: Tensor, _path: str = path) -> None:
                store[_path] = out

            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def forward_with_features(model: nn.Module, x: Tensor, paths: Sequence[str] = ()) -> Outputs:
    """Run ``model`` on ``x`` and return its logits with the outputs of the modules at ``paths``."""
    if not paths:
        return Outputs(model(x), {})
    with capture(model, paths) as store:
        logits = model(x)
    return Outputs(logits, dict(store))


def execution_order(model: nn.Module, x: Tensor) -> list[str]:
    """Paths of leaf modules in the order a forward pass on ``x`` executes them."""
    order: list[str] = []
    handles = []
    try:
        for name, m in model.named_modules():
            if name and not list(m.children()):
                handles.append(m.register_forward_hook(lambda *_a, _n=name: order.append(_n)))
        model(x)
    finally:
        for h in handles:
            h.remove()
    return order


#: Normalisation modules: their affine weight γ rescales features, it is not the layer's own map.
NORMALISATION: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def is_weight(name: str) -> bool:
    """Whether a parameter's own name marks a weight matrix or kernel: ``weight`` (linear,
    conv, embedding), ``weight_*`` (recurrent: ``weight_ih_l0``, ``weight_hh_l0_reverse``) or
    ``*_weight`` (attention: ``in_proj_weight``). Biases never are."""
    return name == "weight" or name.startswith("weight_") or name.endswith("_weight")


def own_weight_names(module: nn.Module, prefix: str = "") -> list[str]:
    """Names (under ``prefix``) of the weights of ``module`` and its submodules, in registration
    order, leaving out every normalisation module (:data:`NORMALISATION`)."""
    names = []
    for path, m in module.named_modules(prefix=prefix):
        if isinstance(m, NORMALISATION):
            continue
        names += [
            f"{path}.{n}" if path else n
            for n, _ in m.named_parameters(recurse=False)
            if is_weight(n)
        ]
    return names


def layer_weight_names(model: nn.Module, path: str, example: Tensor | None = None) -> list[str]:
    """Parameter names of the weights whose path length measures how fast the layer at ``path``
    learns: the layer's own weights, never a bias nor a normalisation module's affine γ.

    Rule: the weights (:func:`is_weight`) of the module at ``path`` and its submodules, leaving
    out normalisation modules: a conv + BatchNorm container gives the conv kernel alone, a
    Transformer block its attention and MLP matrices without its LayerNorms, an LSTM block its
    input and recurrent matrices. If that leaves nothing (an activation, a pooling, a
    normalisation module itself), the weights of the last module that has some and runs before
    the layer, found from one forward pass on ``example``: ``fc1_act`` gives ``fc1.weight``, a
    ReLU after conv + BatchNorm the conv kernel.
    """
    names = own_weight_names(get_module(model, path), path)
    if names:
        return names
    if example is None:
        raise KdscopeError(f"layer {path!r} has no weights; an example input is needed to find one")
    order = execution_order(model, example)
    leaves = [p for p in order if p == path or p.startswith(path + ".")]
    stop = order.index(leaves[0]) if leaves else len(order)
    for prev in reversed(order[:stop]):
        names = own_weight_names(get_module(model, prev), prev)
        if names:
            return names
    raise KdscopeError(f"no parametrised module runs before layer {path!r}")


def layer_weights(model: nn.Module, path: str, example: Tensor | None = None) -> list[nn.Parameter]:
    """The weight tensors named by :func:`layer_weight_names`, in that order."""
    params = dict(model.named_parameters())
    return [params[n] for n in layer_weight_names(model, path, example)]
