"""Address intermediate layers by module path with context-managed forward hooks.

Models are never edited to expose features: :func:`capture` registers forward hooks on the
modules named by dotted paths (``"stage2"``, ``"features.3"``) and removes them on exit, also when
the body raises, so no hook outlives its use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

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
    """The submodule at dotted ``path``; an unknown path is a user error listing valid ones."""
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


def layer_weights(model: nn.Module, path: str, example: Tensor | None = None) -> list[nn.Parameter]:
    """The weight tensors whose path length measures how fast the layer at ``path`` learns.

    Following the knowledge-point reference: the ``weight`` tensors inside the module at ``path``
    (a container contributes all of them, in registration order); if it has none (an activation),
    the weight of the last parametrised module executed before it, found from one forward pass
    on ``example``. Biases are never included.
    """
    module = get_module(model, path)
    weights = [p for n, p in module.named_parameters() if n.split(".")[-1] == "weight"]
    if weights:
        return weights
    if example is None:
        raise KdscopeError(f"layer {path!r} has no weights; an example input is needed to find one")
    order = execution_order(model, example)
    leaves = [p for p in order if p == path or p.startswith(path + ".")]
    stop = order.index(leaves[0]) if leaves else len(order)
    for prev in reversed(order[:stop]):
        w = getattr(get_module(model, prev), "weight", None)
        if isinstance(w, nn.Parameter):
            return [w]
    raise KdscopeError(f"no parametrised module runs before layer {path!r}")
