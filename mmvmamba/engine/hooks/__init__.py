"""Runner hooks."""
from .finite_loss_hook import FiniteLossHook
from .loss_trace_hook import LossTraceHook
from .rng_state_hook import RNGStateHook

__all__ = ['FiniteLossHook', 'LossTraceHook', 'RNGStateHook']
