"""A model's trainable parameters as layer groups ordered from input to output.

Layer-wise regimes (LeRaC, multirate) give each group its own learning rate, so
the grouping decides what "a layer" is (see REGIMES.md, Notation). It is derived
from the module tree alone, so it works for any `nn.Module`:

- `module`: one group per module that owns parameters, a normalisation layer
  joined to the group before it (a conv and its BatchNorm form one layer).
- `block`: one group per top-level stage, with containers of blocks (a ResNet's
  `layer1`) split into their blocks; this reproduces the official LeRaC grouping
  of ResNet-18 (stem, layer1.0, ..., layer4.1, head). A model whose blocks sit
  too deep in a library's module tree to be found this way (HF's BERT and
  CvT) names them itself with a `layer_blocks()` method (`DeclaresBlocks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from trainables.config import GRANULARITIES

# _NormBase covers BatchNorm*, SyncBatchNorm and InstanceNorm*.
_NORM_TYPES = (_NormBase, nn.LayerNorm, nn.GroupNorm)
_CONTAINER_TYPES = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@runtime_checkable
class DeclaresBlocks(Protocol):
    """A model that names its own blocks, input to output, for `block` granularity.

    Every trainable parameter must be in one of them (a parameter named twice
    stays in the first).
    """

    def layer_blocks(self) -> Iterable[tuple[str, Iterable[nn.Parameter]]]: ...


@dataclass(frozen=True)
class LayerGroup:
    """A named set of parameters that share one learning rate."""

    name: str
    params: tuple[nn.Parameter, ...]


@dataclass(frozen=True)
class _Unit:
    """A candidate group before deduplication and joining of normalisation layers."""

    name: str
    params: tuple[nn.Parameter, ...]
    norm_only: bool


def layer_groups(model: nn.Module, granularity: str = "block") -> list[LayerGroup]:
    """Group the trainable parameters of `model`, ordered from input to output.

    Every parameter with requires_grad appears in exactly one group (shared
    parameters in the first), and no group is empty.
    """
    if granularity == "block":
        units = _declared_units(model) if isinstance(model, DeclaresBlocks) else _block_units(model)
    elif granularity == "module":
        units = _module_units(model)
    else:
        raise ValueError(
            f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}"
        )
    return _merge(units)


def _merge(units: Iterable[_Unit]) -> list[LayerGroup]:
    """Drop frozen and already-grouped parameters; join normalisation-only units backwards."""
    seen: set[int] = set()
    groups: list[LayerGroup] = []
    for unit in units:
        fresh = tuple(p for p in unit.params if p.requires_grad and id(p) not in seen)
        if not fresh:
            continue
        seen.update(id(p) for p in fresh)
        if unit.norm_only and groups:
            last = groups.pop()
            groups.append(LayerGroup(last.name, last.params + fresh))
        else:
            groups.append(LayerGroup(unit.name, fresh))
    return groups


def _own_param_units(module: nn.Module, prefix: str) -> Iterator[_Unit]:
    """One unit per parameter registered directly on `module` (e.g. a class token)."""
    for name, param in module.named_parameters(recurse=False):
        yield _Unit(prefix + name, (param,), norm_only=False)


def _module_units(model: nn.Module) -> list[_Unit]:
    units = list(_own_param_units(model, ""))
    for name, module in model.named_modules():
        params = tuple(module.parameters(recurse=False))
        if name and params:
            units.append(_Unit(name, params, norm_only=isinstance(module, _NORM_TYPES)))
    return units


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_composite(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _param_children(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, child) for name, child in module.named_children() if _has_params(child)]


def _is_block_container(module: nn.Module) -> bool:
    """A Sequential/ModuleList/ModuleDict holding blocks, such as a ResNet stage."""
    return isinstance(module, _CONTAINER_TYPES) and any(
        _is_composite(child) for _, child in _param_children(module)
    )


def _is_norm_only(module: nn.Module) -> bool:
    owners = [m for m in module.modules() if next(m.parameters(recurse=False), None) is not None]
    return bool(owners) and all(isinstance(m, _NORM_TYPES) for m in owners)


def _subtree_unit(name: str, module: nn.Module) -> _Unit:
    return _Unit(name, tuple(module.parameters()), norm_only=_is_norm_only(module))


def _declared_units(model: DeclaresBlocks) -> list[_Unit]:
    """The model's own blocks; ValueError if they leave a trainable parameter out."""
    units = [_Unit(name, tuple(params), norm_only=False) for name, params in model.layer_blocks()]
    declared = {id(p) for unit in units for p in unit.params}
    for name, param in model.named_parameters():  # type: ignore[attr-defined]
        if param.requires_grad and id(param) not in declared:
            raise ValueError(f"{type(model).__name__}.layer_blocks() leaves out parameter {name!r}")
    return units


def _block_units(model: nn.Module) -> list[_Unit]:
    """Units for the top-level stages, descending through single-child wrappers."""
    units: list[_Unit] = []
    module, prefix = model, ""
    while True:
        units += _own_param_units(module, prefix)
        children = _param_children(module)
        if len(children) != 1 or not _is_composite(children[0][1]):
            break
        name, module = children[0]
        prefix = f"{prefix}{name}."
    for name, child in children:
        if _is_block_container(child):
            units += _own_param_units(child, f"{prefix}{name}.")
            units += (
                _subtree_unit(f"{prefix}{name}.{sub}", grandchild)
                for sub, grandchild in child.named_children()
            )
        else:
            units.append(_subtree_unit(prefix + name, child))
    return units
