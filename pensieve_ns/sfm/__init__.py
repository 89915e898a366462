"""Test-time cameras for a clip (``pensieve-cameras``): optical-flow tracks, handed to COLMAP's library for the
geometry, with rotation-only calibration for pans and low-parallax video. No learned weights."""

from pensieve_ns.sfm.config import SolverConfig
from pensieve_ns.sfm.solver import SolveError, SolverResult, solve_cameras

__all__ = ["SolverConfig", "SolveError", "SolverResult", "solve_cameras"]
