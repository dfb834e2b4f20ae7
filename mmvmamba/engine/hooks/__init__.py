"""Runner hooks."""
from .loss_trace_hook import LossTraceHook
from .rng_state_hook import RNGStateHook

__all__ = ['LossTraceHook', 'RNGStateHook']
