"""The "current scene" of a stage-2 model: the Gaussians and cameras predicted for one clip, kept in buffers.

nerfstudio's ``ns-export gaussian-splat``, ``ns-viewer`` and ``ns-render`` expect a ``SplatfactoModel`` whose
``means``/``scales``/``quats``/``opacities``/``shs_0`` describe one static scene, and ``get_outputs_for_camera``
renders it at a nerfstudio camera. A feed-forward model has a scene per clip; ``SceneMixin`` holds one of them
(set by ``set_scene``; the pipeline sets it from a fixed evaluation clip whenever a checkpoint is written), so the
buffers travel in the checkpoint and export works after loading, with no data and no forward pass.

Storage follows the 3DGS/PLY parametrisation: log scales, opacity logits, quaternions wxyz, DC colour
coefficients (RGB = 0.5 + SH_C0 * DC). World frame: the predicted cameras' world; cameras are kept as OpenCV
camera-to-world (``scene_c2w_opencv``) and pixel intrinsics of the clip's resolution (``scene_K``).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from pensieve_ns.cameras import invert_rigid, opengl_to_opencv_c2w, to_homogeneous
from pensieve_ns.model.gaussian_head import SH_C0

SCENE_BUFFERS = {  # name -> trailing shape
    "scene_means": (3,), "scene_log_scales": (3,), "scene_quats": (4,), "scene_sh0": (3,), "scene_opacity_logits": (1,),
    "scene_c2w_opencv": (4, 4), "scene_K": (3, 3), "scene_hw": (), "scene_images": (3, 0, 0),
}


class SceneMixin:
    """Scene buffers and the SplatfactoModel properties that read them (mixed in before SplatfactoModel)."""

    def init_scene_buffers(self) -> None:
        for name, shape in SCENE_BUFFERS.items():
            self.register_buffer(name, torch.zeros(0, *shape), persistent=True)
        self.crop_box = None
        self.background_color = torch.full((3,), 0.5)

    @torch.no_grad()
    def set_scene(
        self, means: Float[Tensor, "N 3"], quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"],
        opacities: Float[Tensor, "N"], colors: Float[Tensor, "N 3"], c2w_opencv: Float[Tensor, "L 4 4"],
        K: Float[Tensor, "L 3 3"], images: Float[Tensor, "L 3 H W"],
    ) -> None:
        """Keep one clip's Gaussians (linear scales, opacities in (0, 1), colours as RGB = 0.5 + SH_C0 * DC), its
        cameras and its frames (for the viewer's frustums and thumbnails)."""
        eps = 1e-6
        p = opacities.clamp(eps, 1 - eps)
        self.scene_means = means.detach().float().clone()
        self.scene_quats = torch.nn.functional.normalize(quats.detach().float(), dim=-1)
        self.scene_log_scales = torch.log(scales.detach().float().clamp_min(1e-8))
        self.scene_opacity_logits = torch.log(p / (1 - p)).detach().float()[:, None]
        self.scene_sh0 = ((colors.detach().float() - 0.5) / SH_C0).clone()
        self.scene_c2w_opencv = c2w_opencv.detach().float().clone()
        self.scene_K = K.detach().float().clone()
        self.scene_hw = torch.tensor([float(images.shape[-2]), float(images.shape[-1])])
        self.scene_images = images.detach().float().clone()

    def has_scene(self) -> bool:
        return self.scene_means.shape[0] > 0

    # ---- what ns-export and the viewer read (SplatfactoModel's names) ----
    @property
    def means(self) -> Tensor:
        return self.scene_means

    @property
    def scales(self) -> Tensor:
        return self.scene_log_scales

    @property
    def quats(self) -> Tensor:
        return self.scene_quats

    @property
    def opacities(self) -> Tensor:
        return self.scene_opacity_logits

    @property
    def features_dc(self) -> Tensor:
        return self.scene_sh0

    @property
    def features_rest(self) -> Tensor:
        return self.scene_sh0.new_zeros(self.scene_sh0.shape[0], 0, 3)

    @property
    def shs_0(self) -> Tensor:
        return self.scene_sh0

    @property
    def shs_rest(self) -> Tensor:
        return self.features_rest

    @property
    def colors(self) -> Tensor:
        return (0.5 + SH_C0 * self.scene_sh0).clamp(0, 1)

    @property
    def num_points(self) -> int:
        return self.scene_means.shape[0]

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        """Resize the scene buffers to the checkpoint's, then load as a plain ``nn.Module`` (SplatfactoModel's own
        version expects its ``gauss_params``). Checkpoints written before scenes existed (or by stage 1) load with
        an empty scene."""
        state_dict = dict(state_dict)
        for name in SCENE_BUFFERS:
            if name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[name], device=self.scene_means.device))
            else:
                state_dict[name] = torch.zeros(0, *SCENE_BUFFERS[name], device=self.scene_means.device)
                setattr(self, name, state_dict[name].clone())
        return torch.nn.Module.load_state_dict(self, state_dict, strict=strict)

    @torch.no_grad()
    def render_scene(
        self, c2w_opencv: Float[Tensor, "C 4 4"], K: Float[Tensor, "C 3 3"], width: int, height: int,
        background: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """The current scene at C OpenCV cameras: rgb [C, 3, H, W], alpha [C, 1, H, W], depth [C, 1, H, W]."""
        from pensieve_ns.render import render

        if background is None:
            background = self.background_color.to(c2w_opencv).view(1, 3, 1, 1)
        rgb, alpha, depth = render(
            self.scene_means, self.scene_quats, torch.exp(self.scene_log_scales), torch.sigmoid(self.scene_opacity_logits[:, 0]),
            self.colors, invert_rigid(c2w_opencv), K, width, height, background=background,
            backend=self.config.renderer, tile_size=self.config.tile_size, tiles_per_chunk=self.config.tiles_per_chunk,
        )
        return {"rgb": rgb, "alpha": alpha, "depth": depth}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, Tensor]:  # type: ignore[override]
        """The viewer's and ns-render's entry: a nerfstudio ``Cameras`` of one camera (OpenGL camera-to-world)."""
        camera = camera.to(self.scene_means.device)
        c2w = opengl_to_opencv_c2w(to_homogeneous(camera.camera_to_worlds[0].float()))[None]
        K = torch.zeros(1, 3, 3, dtype=c2w.dtype, device=c2w.device)
        K[0, 0, 0], K[0, 1, 1] = camera.fx[0, 0], camera.fy[0, 0]
        K[0, 0, 2], K[0, 1, 2], K[0, 2, 2] = camera.cx[0, 0], camera.cy[0, 0], 1.0
        width, height = int(camera.width[0, 0]), int(camera.height[0, 0])
        if not self.has_scene():
            rgb = self.background_color.to(c2w).expand(height, width, 3)
            return {"rgb": rgb, "depth": rgb.new_zeros(height, width, 1), "accumulation": rgb.new_zeros(height, width, 1)}
        out = self.render_scene(c2w, K, width, height)
        return {
            "rgb": out["rgb"][0].permute(1, 2, 0),
            "depth": out["depth"][0].permute(1, 2, 0),
            "accumulation": out["alpha"][0].permute(1, 2, 0),
        }


class SceneFrames(torch.utils.data.Dataset):
    """The current scene's frames with their PREDICTED cameras, as nerfstudio's viewer reads ``train_dataset``:
    ``cameras`` (nerfstudio ``Cameras``, OpenGL camera-to-world), ``scene_box``, ``metadata`` and items
    ``{"image": [H, W, 3], "image_idx": i}``."""

    def __init__(self, model: SceneMixin):
        from nerfstudio.cameras.cameras import Cameras, CameraType
        from nerfstudio.data.scene_box import SceneBox

        from pensieve_ns.cameras import opencv_to_opengl_c2w

        self.images = model.scene_images.cpu()
        L, _, H, W = self.images.shape
        K = model.scene_K.cpu()
        self.cameras = Cameras(
            camera_to_worlds=opencv_to_opengl_c2w(model.scene_c2w_opencv.cpu())[:, :3, :4].contiguous(),
            fx=K[:, 0, 0:1], fy=K[:, 1, 1:2], cx=K[:, 0, 2:3], cy=K[:, 1, 2:3],
            width=torch.full((L, 1), W, dtype=torch.long), height=torch.full((L, 1), H, dtype=torch.long),
            camera_type=CameraType.PERSPECTIVE,
        )
        extent = float(model.scene_c2w_opencv[:, :3, 3].abs().max().clamp_min(1.0)) * 2
        self.scene_box = SceneBox(aabb=torch.tensor([[-extent] * 3, [extent] * 3]))
        self.metadata: Dict = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Dict:
        return {"image": self.images[i].permute(1, 2, 0).contiguous(), "image_idx": i}


def open_viewer_at_first_camera(model: SceneMixin):
    """A nerfstudio ``ViewerControl`` that puts every browser that connects to ``ns-viewer`` at the scene's first
    predicted camera (the predicted world is arbitrary, so the viewer's default camera usually looks elsewhere)."""
    import numpy as np
    import viser.transforms as vtf
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
    from nerfstudio.viewer.viewer_elements import ViewerControl

    from pensieve_ns.cameras import opencv_to_opengl_c2w

    def first_camera():  # a closure, not an attribute: the viewer's object scraper must not walk into the model
        if not model.has_scene():
            return None
        c2w = opencv_to_opengl_c2w(model.scene_c2w_opencv[0].double().cpu()).numpy()
        fov = float(2 * np.arctan(float(model.scene_hw[0]) / 2 / float(model.scene_K[0, 1, 1])))
        return c2w, fov

    class OpenAtFirstCamera(ViewerControl):
        def _setup(self, viewer) -> None:
            super()._setup(viewer)
            viewer.viser_server.on_client_connect(self._move)

        def _move(self, client) -> None:
            camera = first_camera()
            if camera is None:
                return
            c2w, fov = camera
            R = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)  # as nerfstudio draws frustums
            with client.atomic():
                client.camera.wxyz = R.wxyz
                client.camera.position = c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO
                client.camera.fov = fov

    return OpenAtFirstCamera()
