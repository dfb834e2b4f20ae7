"""Backend registry and choice for mmvmamba's ops.

Every op (``selective_scan``, ``ss2d_core``, ``layer_norm_2d``, ...) has named backends. A backend
is a function plus an availability check ``check(device) -> (ok, reason)`` and a priority. A
request is a backend name or ``'auto'``/None; None reads the op's environment variable (e.g.
``MMVMAMBA_SCAN_BACKEND``), defaulting to ``'auto'``. ``'auto'`` picks the available backend with
the highest priority for the tensor's device; a named backend that is unavailable is an error
that carries the check's reason (e.g. how to build the compiled op), never a silent switch.
The chosen backend is logged once per (op, device type).

Resolution runs as plain Python at trace time under ``torch.compile``: its result is a constant
(the backend name), so it causes no graph break. The environment variable is therefore read when
a function is traced; changing it later does not retrace compiled code.
"""
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import torch

__all__ = ['register', 'resolve', 'resolve_name', 'auto_fallback', 'available_backends',
           'registered_backends', 'ENV_VARS']

AvailabilityCheck = Callable[[torch.device], Tuple[bool, str]]

#: Environment variable that selects each op's backend when the caller passes ``backend=None``.
ENV_VARS: Dict[str, str] = {
    'selective_scan': 'MMVMAMBA_SCAN_BACKEND',
    'ss2d_core': 'MMVMAMBA_SS2D_BACKEND',
    'layer_norm_2d': 'MMVMAMBA_NORM_BACKEND',
    'cross_scan': 'MMVMAMBA_CROSS_BACKEND',
    'cross_merge': 'MMVMAMBA_CROSS_BACKEND',
}

_AUTO = ('auto', '')


@dataclass(frozen=True)
class Backend:
    """One implementation of an op.

    Attributes:
        name (str): Backend name, e.g. ``'reference'``.
        fn (Callable): The implementation, same signature as the public op minus ``backend``.
        check (Callable): ``check(device) -> (ok, reason)``; ``reason`` says why it is
            unavailable and how to fix that.
        priority (int): ``'auto'`` prefers higher priorities.
    """

    name: str
    fn: Callable
    check: AvailabilityCheck
    priority: int


_REGISTRY: Dict[str, Dict[str, Backend]] = {}
_LOGGED: set = set()
# Eager-mode memo of resolve(): (op, backend, env value, device type) -> implementation.
_RESOLVED: Dict[tuple, Callable] = {}


def _always(device: torch.device) -> Tuple[bool, str]:
    return True, ''


def register(op: str,
             name: str,
             fn: Callable,
             check: Optional[AvailabilityCheck] = None,
             priority: int = 0) -> None:
    """Register backend ``name`` for ``op``.

    Args:
        op (str): Op name, e.g. ``'selective_scan'``.
        name (str): Backend name; ``'auto'`` is reserved.
        fn (Callable): Implementation.
        check (Callable, optional): ``check(device) -> (ok, reason)``. Default: always available.
        priority (int): Higher wins under ``'auto'``. Default: 0.
    """
    if name.lower() in _AUTO:
        raise ValueError(f"'{name}' is reserved and cannot name a backend of {op}")
    _REGISTRY.setdefault(op, {})[name] = Backend(name, fn, check or _always, priority)
    _RESOLVED.clear()


def registered_backends(op: str) -> Dict[str, Backend]:
    """Return ``{name: Backend}`` for ``op`` (empty if unknown)."""
    return dict(_REGISTRY.get(op, {}))


def available_backends(op: str, device: Union[str, torch.device]) -> Dict[str, Tuple[bool, str]]:
    """Return ``{name: (ok, reason)}`` for every backend of ``op`` on ``device``."""
    device = torch.device(device)
    return {name: b.check(device) for name, b in _REGISTRY.get(op, {}).items()}


def _logger():
    from mmengine.logging import MMLogger
    return MMLogger.get_current_instance()


def _request(op: str, backend: Optional[str]) -> Tuple[str, str]:
    """The requested backend, lower-cased (None reads the op's env var, default ``'auto'``),
    and where it came from, for messages."""
    if backend is None:
        env = ENV_VARS.get(op)
        backend = os.environ.get(env, 'auto') if env else 'auto'
        source = f'{env}={backend!r}' if env else 'default'
    else:
        source = 'argument'
    return backend.strip().lower(), source


@torch.compiler.assume_constant_result
def resolve_name(op: str, backend: Optional[str], device_type: str) -> str:
    """Resolve a backend request to a backend name.

    Args:
        op (str): Op name.
        backend (str, optional): ``None`` (read the op's env var), ``'auto'`` or a name.
        device_type (str): ``'cpu'``, ``'cuda'``, ...

    Returns:
        str: Name of the chosen backend.

    Raises:
        KeyError: Unknown op or backend name.
        RuntimeError: The requested backend is unavailable on this device (with the reason).
    """
    backends = _REGISTRY.get(op)
    if not backends:
        raise KeyError(f'no backends registered for op {op!r}; known ops: {sorted(_REGISTRY)}')
    requested, source = _request(op, backend)
    device = torch.device(device_type)
    if requested in _AUTO:
        candidates = sorted(backends.values(), key=lambda b: -b.priority)
        reasons = []
        for candidate in candidates:
            ok, reason = candidate.check(device)
            if ok:
                break
            reasons.append(f'{candidate.name}: {reason}')
        else:
            raise RuntimeError(f'no backend of {op} is available on {device_type}: '
                               + '; '.join(reasons))
        chosen = candidate.name
        skipped = '; '.join(reasons)
    else:
        if requested not in backends:
            raise KeyError(f'unknown backend {requested!r} for {op} (from {source}); choose one of '
                           f"{['auto'] + sorted(backends)}")
        ok, reason = backends[requested].check(device)
        if not ok:
            raise RuntimeError(f'backend {requested!r} of {op} was requested ({source}) but is '
                               f'unavailable on {device_type}: {reason}')
        chosen = requested
        skipped = ''
    key = (op, device_type, chosen)
    if key not in _LOGGED:
        _LOGGED.add(key)
        note = f' (skipped: {skipped})' if skipped else ''
        _logger().info(f'mmvmamba.ops: {op} on {device_type} uses the {chosen!r} backend '
                       f'(requested {requested!r} via {source}){note}')
    return chosen


@torch.compiler.assume_constant_result
def auto_fallback(op: str, backend: Optional[str], fallback: str, reason: str) -> Optional[str]:
    """``fallback`` if the request is ``'auto'`` (argument or env var), else ``backend``.

    For inputs the preferred backend cannot take (e.g. the fused SS2D core with d_state > 1):
    ``'auto'`` then means ``fallback``, logged once per (op, fallback) with ``reason``. A backend
    named explicitly is returned unchanged, so forcing one that cannot take the input still fails
    loudly in that backend. Constant under ``torch.compile`` (shapes are static there).
    """
    if _request(op, backend)[0] not in _AUTO:
        return backend
    key = (op, 'fallback', fallback)
    if key not in _LOGGED:
        _LOGGED.add(key)
        _logger().info(f'mmvmamba.ops: {op} uses the {fallback!r} backend for some inputs under '
                       f"'auto': {reason}")
    return fallback


def resolve(op: str, backend: Optional[str], device: torch.device) -> Callable:
    """Return the implementation of ``op`` chosen for ``backend`` on ``device``.

    See :func:`resolve_name` for the rules. In eager mode the answer is memoised per
    (op, backend, environment value, device type), so a layer pays a dict lookup per call; the
    memo is cleared when a backend is registered.
    """
    if torch.compiler.is_compiling():
        return _REGISTRY[op][resolve_name(op, backend, device.type)].fn
    env = os.environ.get(ENV_VARS.get(op, ''), None) if backend is None else None
    key = (op, backend, env, device.type)
    fn = _RESOLVED.get(key)
    if fn is None:
        fn = _REGISTRY[op][resolve_name(op, backend, device.type)].fn
        _RESOLVED[key] = fn
    return fn
