"""Test-time cameras from optical flow and bundle adjustment (no learned weights): ``solve_cameras``."""

from pensieve_ns.flow.solver import FlowCamerasConfig, FlowCamerasResult, solve_cameras

__all__ = ["FlowCamerasConfig", "FlowCamerasResult", "solve_cameras"]
