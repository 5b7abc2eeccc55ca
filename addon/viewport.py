"""Real Gaussians in the 3D viewport: a draw handler that splats each splat object as the backend does.

Every visible splat object (one imported by Radiant Forge, with ``radiantforge_viewport_splats``
on) is drawn as instanced screen-space quads, one per Gaussian, sorted back to front and blended
"over" with premultiplied alpha — the backend's front-to-back compositing in reverse. The vertex
shader does the backend's projection (``viewport_math.project``: EWA 2D covariance with the
FOV-clamped Jacobian, the 0.3 px^2 low-pass, the opacity-aware radius) and its SH colour up to
degree 3 along the view direction; the fragment shader its alpha ``min(0.999, o exp(-0.5 d^T Q d))``
with the 1/255 cut. Colours are drawn as the backend composites them (sRGB-encoded values), into
the viewport's display-space overlay.

Splat data lives in a float texture (``TEXELS_FIXED`` texels of mean/opacity/covariance per splat,
then its SH coefficients); the draw order is a second texture, re-sorted with numpy only when
the object's view matrix changed — in a worker thread for big clouds, so the UI keeps the last order
meanwhile. Above ``MAX_DRAWN_SPLATS`` the most visible splats are drawn (``viewport_math.level_of_detail``).

``draw_splats_offscreen`` draws with a given camera into a ``GPUOffScreen`` for tests and previews.
"""

from __future__ import annotations

import threading

import bpy
import gpu
import numpy as np
from gpu_extras.batch import batch_for_shader

from . import viewport_math
from .importers.gaussians import read_splat_columns

TOGGLE_PROPERTY = "radiantforge_viewport_splats"
TEXTURE_WIDTH = 4096  # texels per row of the data textures
TEXELS_FIXED = 3  # mean + opacity, covariance xx xy xz yy, covariance yz zz
MAX_DRAWN_SPLATS = 2_000_000  # level of detail above this (about 120 MB of texture at SH degree 3)
THREADED_SORT_ABOVE = 200_000  # splats: sort in a worker thread above this (an argsort of 1M takes ~0.1 s)
NEAR_PLANE = 0.01  # the backend's near plane (camera z below it is culled)

_VERTEX_SOURCE = """
vec4 splat_texel(int index) {
  return texelFetch(splat_data, ivec2(index % TEXTURE_WIDTH, index / TEXTURE_WIDTH), 0);
}
float sh_coefficient(int base, int flat_index) {
  vec4 texel = splat_texel(base + flat_index / 4);
  int lane = flat_index % 4;
  return lane == 0 ? texel.x : (lane == 1 ? texel.y : (lane == 2 ? texel.z : texel.w));
}
vec3 sh_term(int base, int k) {
  return vec3(sh_coefficient(base, 3 * k), sh_coefficient(base, 3 * k + 1), sh_coefficient(base, 3 * k + 2));
}
void main() {
  int slot = gl_InstanceID;
  int splat = int(texelFetch(draw_order, ivec2(slot % TEXTURE_WIDTH, slot / TEXTURE_WIDTH), 0).r + 0.5);
  int base = splat * stride;
  vec4 t0 = splat_texel(base), t1 = splat_texel(base + 1), t2 = splat_texel(base + 2);
  vec3 mean = t0.xyz;
  float opacity = t0.w;
  mat3 cov = mat3(t1.x, t1.y, t1.z, t1.y, t1.w, t2.x, t1.z, t2.x, t2.y);
  vec4 view_gl = model_view * vec4(mean, 1.0);
  vec3 cam = vec3(view_gl.x, -view_gl.y, -view_gl.z);  /* OpenCV camera: +Z forward, +Y down */
  v_offset = vec2(0.0);
  v_conic = vec3(0.0);
  v_color = vec3(0.0);
  v_opacity = 0.0;
  if (cam.z < NEAR_PLANE || opacity < ALPHA_THRESHOLD) {
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);  /* outside the clip volume: culled */
    return;
  }
  mat3 w = mat3(model_view);
  mat3 w_cv = mat3(vec3(w[0].x, -w[0].y, -w[0].z), vec3(w[1].x, -w[1].y, -w[1].z), vec3(w[2].x, -w[2].y, -w[2].z));
  float fx = intrinsics.x, fy = intrinsics.y, cx = intrinsics.z, cy = intrinsics.w;
  float width = viewport.x, height = viewport.y;
  float inv_z = 1.0 / cam.z;
  float tan_x = 0.5 * width / fx, tan_y = 0.5 * height / fy;
  float x_over_z = clamp(cam.x * inv_z, -(cx / fx + FOV_MARGIN * tan_x), (width - cx) / fx + FOV_MARGIN * tan_x);
  float y_over_z = clamp(cam.y * inv_z, -(cy / fy + FOV_MARGIN * tan_y), (height - cy) / fy + FOV_MARGIN * tan_y);
  vec3 j0 = vec3(fx * inv_z, 0.0, -fx * inv_z * x_over_z);
  vec3 j1 = vec3(0.0, fy * inv_z, -fy * inv_z * y_over_z);
  vec3 a0 = j0 * w_cv, a1 = j1 * w_cv;  /* rows of J W */
  vec3 cov_a0 = cov * a0, cov_a1 = cov * a1;
  float cov_xx = dot(a0, cov_a0) + EPS2D, cov_xy = dot(a0, cov_a1), cov_yy = dot(a1, cov_a1) + EPS2D;
  float det = cov_xx * cov_yy - cov_xy * cov_xy;
  if (det <= 0.0) {
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
    return;
  }
  float extent = min(MAX_EXTENT, sqrt(2.0 * log(opacity / ALPHA_THRESHOLD)));
  vec2 radius = ceil(extent * sqrt(vec2(cov_xx, cov_yy)));
  vec2 mean2d = vec2(fx * cam.x * inv_z + cx, fy * cam.y * inv_z + cy);
  vec2 offset = corner * radius;
  vec2 pixel = mean2d + offset;
  float ndc_z = (viewport.z * cam.z + viewport.w) * inv_z;
  gl_Position = vec4(2.0 * pixel.x / width - 1.0, 1.0 - 2.0 * pixel.y / height, ndc_z, 1.0);
  v_offset = offset;
  v_conic = vec3(cov_yy, -cov_xy, cov_xx) / det;
  v_opacity = opacity;

  int sh_base = base + FIXED_TEXELS;
  vec3 color = SH_C0 * sh_term(sh_base, 0);
  if (sh_count > 1) {
    vec3 d = normalize(mean - camera_position.xyz);
    float x = d.x, y = d.y, z = d.z;
    color += -SH_C1 * y * sh_term(sh_base, 1) + SH_C1 * z * sh_term(sh_base, 2) - SH_C1 * x * sh_term(sh_base, 3);
    if (sh_count > 4) {
      float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
      color += 1.0925484305920792 * xy * sh_term(sh_base, 4) - 1.0925484305920792 * yz * sh_term(sh_base, 5)
             + 0.31539156525252005 * (2.0 * zz - xx - yy) * sh_term(sh_base, 6)
             - 1.0925484305920792 * xz * sh_term(sh_base, 7) + 0.5462742152960396 * (xx - yy) * sh_term(sh_base, 8);
      if (sh_count > 9) {
        color += -0.5900435899266435 * y * (3.0 * xx - yy) * sh_term(sh_base, 9)
               + 2.890611442640554 * xy * z * sh_term(sh_base, 10)
               - 0.4570457994644658 * y * (4.0 * zz - xx - yy) * sh_term(sh_base, 11)
               + 0.3731763325901154 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh_term(sh_base, 12)
               - 0.4570457994644658 * x * (4.0 * zz - xx - yy) * sh_term(sh_base, 13)
               + 1.445305721320277 * z * (xx - yy) * sh_term(sh_base, 14)
               - 0.5900435899266435 * x * (xx - 3.0 * yy) * sh_term(sh_base, 15);
      }
    }
  }
  v_color = max(color + 0.5, vec3(0.0));
}
"""

_FRAGMENT_SOURCE = """
void main() {
  float power = -0.5 * (v_conic.x * v_offset.x * v_offset.x + v_conic.z * v_offset.y * v_offset.y)
                - v_conic.y * v_offset.x * v_offset.y;
  if (power > 0.0) {
    discard;
  }
  float alpha = min(MAX_ALPHA, v_opacity * exp(power));
  if (alpha < ALPHA_THRESHOLD) {
    discard;
  }
  frag_color = vec4(v_color * alpha, alpha);
}
"""

_shader = None
_quad_batch = None


def splat_shader() -> gpu.types.GPUShader:
    """The instanced-quad Gaussian shader (compiled once per session)."""
    global _shader, _quad_batch
    if _shader is not None:
        return _shader
    info = gpu.types.GPUShaderCreateInfo()
    info.push_constant("MAT4", "model_view")
    info.push_constant("VEC4", "intrinsics")
    info.push_constant("VEC4", "viewport")  # width, height, NDC depth coefficients (2): under 128 bytes in all
    info.push_constant("VEC4", "camera_position")  # xyz in object space
    info.push_constant("INT", "stride")
    info.push_constant("INT", "sh_count")
    info.sampler(0, "FLOAT_2D", "splat_data")
    info.sampler(1, "FLOAT_2D", "draw_order")
    info.vertex_in(0, "VEC2", "corner")
    interface = gpu.types.GPUStageInterfaceInfo("radiantforge_splat_interface")
    interface.smooth("VEC2", "v_offset")
    interface.flat("VEC3", "v_conic")
    interface.flat("VEC3", "v_color")
    interface.flat("FLOAT", "v_opacity")
    info.vertex_out(interface)
    info.fragment_out(0, "VEC4", "frag_color")
    constants = {
        "TEXTURE_WIDTH": f"{TEXTURE_WIDTH}", "FIXED_TEXELS": f"{TEXELS_FIXED}", "NEAR_PLANE": f"{NEAR_PLANE:.9g}",
        "ALPHA_THRESHOLD": f"{viewport_math.ALPHA_THRESHOLD:.9g}", "MAX_ALPHA": f"{viewport_math.MAX_ALPHA:.9g}",
        "MAX_EXTENT": f"{viewport_math.MAX_EXTENT_SIGMAS:.9g}", "FOV_MARGIN": f"{viewport_math.FOV_CLAMP_MARGIN:.9g}",
        "EPS2D": f"{viewport_math.LOW_PASS_EPS2D:.9g}", "SH_C0": f"{viewport_math.SH_C0:.17g}",
        "SH_C1": f"{viewport_math.SH_C1:.17g}",
    }
    for name, value in constants.items():
        info.define(name, value)
    info.vertex_source(_VERTEX_SOURCE)
    info.fragment_source(_FRAGMENT_SOURCE)
    _shader = gpu.shader.create_from_info(info)
    _quad_batch = batch_for_shader(_shader, "TRI_STRIP", {"corner": [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)]})
    return _shader


def _float_texture(values: np.ndarray, channels: int) -> gpu.types.GPUTexture:
    """A TEXTURE_WIDTH-wide float texture holding ``values`` (flat, padded with zeros)."""
    texels = -(-len(values) // channels)
    rows = max(1, -(-texels // TEXTURE_WIDTH))
    padded = np.zeros(rows * TEXTURE_WIDTH * channels, dtype=np.float32)
    padded[:len(values)] = values
    buffer = gpu.types.Buffer("FLOAT", len(padded), padded)
    return gpu.types.GPUTexture((TEXTURE_WIDTH, rows), format="RGBA32F" if channels == 4 else "R32F", data=buffer)


class SplatDrawData:
    """One splat object's GPU data: parameters texture, draw-order texture and the last view it was sorted for."""

    def __init__(self, columns: dict[str, np.ndarray], max_splats: int = MAX_DRAWN_SPLATS):
        params = viewport_math.splat_parameters(columns)
        keep = viewport_math.level_of_detail(params["opacities"], params["scales"], max_splats)
        params = {name: value[keep] for name, value in params.items()}
        self.count = len(keep)
        self.means = params["means"]  # (N, 3) object space, for sorting
        self.sh_count = params["sh"].shape[1]
        sh_texels = -(-3 * self.sh_count // 4)
        self.stride = TEXELS_FIXED + sh_texels
        covs = viewport_math.covariances(params["quats"].astype(np.float64), params["scales"].astype(np.float64))
        table = np.zeros((self.count, self.stride * 4), dtype=np.float32)
        table[:, 0:3] = self.means
        table[:, 3] = params["opacities"]
        table[:, 4:8] = np.stack([covs[:, 0, 0], covs[:, 0, 1], covs[:, 0, 2], covs[:, 1, 1]], axis=1)
        table[:, 8:10] = np.stack([covs[:, 1, 2], covs[:, 2, 2]], axis=1)
        table[:, 12:12 + 3 * self.sh_count] = params["sh"].reshape(self.count, -1)
        self.data_texture = _float_texture(table.ravel(), 4)
        self.order_texture = None
        self.sorted_for = None  # the model-view matrix (4, 4) of the current order
        self._pending = None  # (model_view, order) from the worker thread
        self._sorting = False

    def _sort(self, model_view: np.ndarray) -> np.ndarray:
        return viewport_math.back_to_front(self.means, viewport_math.gl_view_to_cv(model_view)).astype(np.float32)

    def ensure_order(self, model_view: np.ndarray, *, wait: bool) -> None:
        """Sort for ``model_view`` (object to GL camera) if it changed; big clouds sort in a thread unless ``wait``."""
        if self._pending is not None:
            view, order = self._pending
            self._pending = None
            self.order_texture, self.sorted_for = _float_texture(order, 1), view
        if self.sorted_for is not None and np.allclose(self.sorted_for, model_view, rtol=0, atol=1e-6):
            return
        if wait or self.count <= THREADED_SORT_ABOVE or self.order_texture is None:
            self.order_texture, self.sorted_for = _float_texture(self._sort(model_view), 1), model_view.copy()
            return
        if self._sorting:
            return
        self._sorting = True
        view = model_view.copy()

        def work():
            try:
                self._pending = (view, self._sort(view))
            finally:
                self._sorting = False
            bpy.app.timers.register(_tag_viewports_for_redraw, first_interval=0.0)

        threading.Thread(target=work, daemon=True).start()

    def draw(self, model_view: np.ndarray, projection: np.ndarray, width: int, height: int,
             camera_position_object: np.ndarray, *, wait_for_sort: bool = False) -> None:
        """Draw into the bound framebuffer. model_view: object to GL camera (4, 4); projection: GL (4, 4)."""
        if self.count == 0:
            return
        self.ensure_order(model_view, wait=wait_for_sort)
        shader = splat_shader()
        fx, fy, cx, cy = viewport_math.intrinsics_from_projection(projection, width, height)
        # NDC depth of a camera z (OpenCV, > 0): (P22 * (-z) + P23) / z.
        depth_coefficients = (-float(projection[2, 2]), float(projection[2, 3]))
        shader.bind()
        shader.uniform_float("model_view", _matrix(model_view))
        shader.uniform_float("intrinsics", (fx, fy, cx, cy))
        shader.uniform_float("viewport", (float(width), float(height), *depth_coefficients))
        shader.uniform_float("camera_position", (*(float(v) for v in camera_position_object), 1.0))
        shader.uniform_int("stride", self.stride)
        shader.uniform_int("sh_count", self.sh_count)
        shader.uniform_sampler("splat_data", self.data_texture)
        shader.uniform_sampler("draw_order", self.order_texture)
        gpu.state.blend_set("ALPHA_PREMULT")
        gpu.state.depth_mask_set(False)
        _quad_batch.draw_instanced(shader, instance_start=0, instance_count=self.count)
        gpu.state.blend_set("NONE")


def _matrix(values) -> "object":
    import mathutils
    return mathutils.Matrix(np.asarray(values, dtype=np.float64).tolist())


def _tag_viewports_for_redraw():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
    return None


# --- per-object cache and the draw handler ---------------------------------------------------

_cache: dict[int, tuple[tuple, SplatDrawData]] = {}
_handle = None


def is_splat_object(obj) -> bool:
    return obj is not None and obj.type == "MESH" and "radiantforge_splat_count" in obj


def draw_data_for(obj) -> SplatDrawData | None:
    """The cached GPU data of a splat object, rebuilt when its mesh changed (splats deleted, file re-read)."""
    mesh = obj.data
    key = (mesh.as_pointer(), len(mesh.vertices), mesh.get("radiantforge_edit_stamp", 0), _geometry_stamp.get(mesh.name, 0))
    cached = _cache.get(obj.as_pointer())
    if cached is not None and cached[0] == key:
        return cached[1]
    columns = read_splat_columns(mesh)
    if columns is None:
        return None
    data = SplatDrawData(columns)
    _cache[obj.as_pointer()] = (key, data)
    return data


_geometry_stamp: dict[str, int] = {}


def _on_depsgraph_update(scene, depsgraph):
    for update in depsgraph.updates:
        if update.is_updated_geometry and isinstance(update.id, bpy.types.Mesh):
            _geometry_stamp[update.id.name] = _geometry_stamp.get(update.id.name, 0) + 1


def draw_object(obj, view_matrix: np.ndarray, projection: np.ndarray, width: int, height: int, *,
                wait_for_sort: bool = False) -> None:
    """Draw one splat object with a view (world to GL camera) and projection matrix into the bound framebuffer."""
    data = draw_data_for(obj)
    if data is None:
        return
    world = np.array(obj.matrix_world, dtype=np.float64)
    model_view = np.asarray(view_matrix, dtype=np.float64) @ world
    camera_world = np.linalg.inv(np.asarray(view_matrix, dtype=np.float64))[:3, 3]
    camera_object = (np.linalg.inv(world) @ np.append(camera_world, 1.0))[:3]
    data.draw(model_view, np.asarray(projection, dtype=np.float64), width, height, camera_object,
              wait_for_sort=wait_for_sort)


def _draw_viewport():
    context = bpy.context
    space, region = context.space_data, context.region
    if space is None or space.type != "VIEW_3D" or space.shading.type == "WIREFRAME":
        return
    rv3d = space.region_3d
    if rv3d is None or not rv3d.is_perspective:
        return  # the backend's camera model is a pinhole; orthographic views show the modifier's geometry
    view = np.array(rv3d.view_matrix, dtype=np.float64)
    projection = np.array(rv3d.window_matrix, dtype=np.float64)
    gpu.state.depth_test_set("LESS_EQUAL")
    for obj in context.visible_objects:
        if is_splat_object(obj) and getattr(obj, TOGGLE_PROPERTY, False) and obj.visible_get():
            draw_object(obj, view, projection, region.width, region.height)
    gpu.state.depth_test_set("NONE")


def draw_splats_offscreen(objects, camera, width: int, height: int, depsgraph=None) -> np.ndarray:
    """Draw splat ``objects`` seen by ``camera`` into a float offscreen; returns premultiplied RGBA (H, W, 4), row 0 at the top."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    view = np.array(camera.matrix_world.inverted(), dtype=np.float64)
    projection = np.array(camera.calc_matrix_camera(depsgraph, x=width, y=height), dtype=np.float64)
    offscreen = gpu.types.GPUOffScreen(width, height, format="RGBA32F")
    try:
        with offscreen.bind():
            framebuffer = gpu.state.active_framebuffer_get()
            framebuffer.clear(color=(0.0, 0.0, 0.0, 0.0), depth=1.0)
            for obj in objects:
                draw_object(obj, view, projection, width, height, wait_for_sort=True)
            pixels = framebuffer.read_color(0, 0, width, height, 4, 0, "FLOAT")
        pixels.dimensions = width * height * 4
        image = np.array(pixels, dtype=np.float32).reshape(height, width, 4)
    finally:
        offscreen.free()
    return image[::-1].copy()  # GL rows start at the bottom


def set_viewport_splats(obj, enabled: bool) -> None:
    """Turn the Gaussian viewport draw of ``obj`` on or off; the modifier's geometry shows in the viewport when off."""
    setattr(obj, TOGGLE_PROPERTY, bool(enabled))


def _toggle_updated(self, context):
    for modifier in self.modifiers:
        if modifier.type == "NODES" and modifier.node_group and modifier.node_group.name.startswith("RadiantForge Splats"):
            modifier.show_viewport = not getattr(self, TOGGLE_PROPERTY)


def register():
    global _handle
    bpy.types.Object.radiantforge_viewport_splats = bpy.props.BoolProperty(
        name="Viewport Gaussians", default=False, update=_toggle_updated,
        description="Draw this splat object in the viewport as sorted, blended Gaussians (as the backend renders them); "
                    "off shows the modifier's render geometry")
    if bpy.app.background:
        return
    _handle = bpy.types.SpaceView3D.draw_handler_add(_draw_viewport, (), "WINDOW", "POST_VIEW")
    if _on_depsgraph_update not in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.append(_on_depsgraph_update)


def unregister():
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    if _on_depsgraph_update in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.remove(_on_depsgraph_update)
    _cache.clear()
    if hasattr(bpy.types.Object, TOGGLE_PROPERTY):
        del bpy.types.Object.radiantforge_viewport_splats
