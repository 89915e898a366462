"""pensieve-ns: cameras and Gaussians from unposed, uncalibrated video, as a nerfstudio plugin.

Kept light on purpose: nerfstudio imports every plugin's entry point while building its CLI, and an
import error here would break every ``ns-*`` command.
"""

__version__ = "0.1.0"
