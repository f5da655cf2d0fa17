"""Dynamics of recurrent models: closed-form Jacobians and Lyapunov spectra."""

from sparsernn.dynamics.lyapunov import Spectrum, lyapunov_spectrum, validation_sequences

__all__ = ["Spectrum", "lyapunov_spectrum", "validation_sequences"]
