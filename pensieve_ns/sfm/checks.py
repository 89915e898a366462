"""Self-checks of a camera solve, computed without any truth: figures that say whether the cameras can be trusted,
and one warning line per failed check (``SolverResult.warnings``, printed on stderr and written into
``transforms.json``)."""

from __future__ import annotations

from typing import Dict, List

from pensieve_ns.sfm.config import CheckConfig


def check_warnings(checks: Dict[str, float], cfg: CheckConfig) -> List[str]:
    """One line per failed check among those present in ``checks``; empty when all pass.

    registered         share of the solved frames that got a camera;
    epipolar_inliers   mean share of adjacent-frame matches that two-view geometry verified (one rigid scene);
    explained          share of the tracks' observations in registered frames that the final points explain;
    focal_ratio        focal length over the frame's long side (a runaway leaves the plausible range);
    parallax_deg       median largest angle between two rays of a point (below about 1 degree, translation
                       directions are poorly determined: pans and distant scenes);
    rotation_only      1 where the clip was solved as a pan (no translation measured)."""
    out = []
    if checks.get("registered", 1.0) < cfg.min_registered:
        out.append(f"only {checks['registered']:.0%} of the solved frames were registered")
    if checks.get("epipolar_inliers", 1.0) < cfg.min_epipolar_inliers:
        out.append(f"only {checks['epipolar_inliers']:.0%} of adjacent-frame matches fit one rigid scene (expected >= "
                   f"{cfg.min_epipolar_inliers:.0%}): moving objects, repeated textures or flow errors")
    if checks.get("explained", 1.0) < cfg.min_explained:
        out.append(f"the cameras explain only {checks['explained']:.0%} of the tracked observations (expected >= "
                   f"{cfg.min_explained:.0%})")
    lo, hi = cfg.focal_range
    if not lo <= checks.get("focal_ratio", 1.0) <= hi:
        out.append(f"the focal length is {checks['focal_ratio']:.2f}x the frame's long side, outside {lo}-{hi}x: "
                   "the calibration ran away")
    if checks.get("parallax_deg", 90.0) < cfg.min_parallax:
        out.append(f"little parallax (points seen {checks['parallax_deg']:.1f} degrees apart, median): translation "
                   "directions are poorly determined")
    if checks.get("rotation_only", 0.0):
        out.append("solved as a pan (rotation only): the camera's translation was not measured and is set to zero")
    return out
