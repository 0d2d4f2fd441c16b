"""Mesh rasterisation with moderngl on EGL: llvmpipe on a CPU machine, the GPU's driver where there is one.

One draw call per frame writes three targets at once (multiple render targets): camera-space normals,
part colours and metric depth. Everything else (mask, depth encoding) is derived from those.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from studio.errors import StudioError

logger = logging.getLogger(__name__)

_VERTEX_SHADER = """
#version 330
uniform mat4 projection;
in vec3 in_position;  // camera space, OpenCV axes (x right, y down, z forward), metres
in vec3 in_normal;
in vec3 in_color;
out vec3 v_normal;
out float v_depth;
flat out vec3 v_color;
void main() {
    gl_Position = projection * vec4(in_position, 1.0);
    v_normal = in_normal;
    v_depth = in_position.z;
    v_color = in_color;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec2 depth_range;  // nearest and farthest vertex depth of this frame, metres
in vec3 v_normal;
in float v_depth;
flat in vec3 v_color;
layout(location = 0) out vec4 out_normal;  // rgb: normal, a: coverage (the mask)
layout(location = 1) out vec4 out_color;   // rgb: part colour, a: encoded depth (near 1, far 32/255)
layout(location = 2) out float out_depth;  // metric depth
void main() {
    vec3 n = normalize(v_normal);
    // OpenCV camera axes -> OpenGL camera axes (x right, y up, z towards the viewer).
    vec3 n_gl = vec3(n.x, -n.y, -n.z);
    if (n_gl.z < 0.0) n_gl = -n_gl;  // a visible surface faces the camera
    out_normal = vec4(n_gl * 0.5 + 0.5, 1.0);
    float s = clamp((v_depth - depth_range.x) / max(depth_range.y - depth_range.x, 1e-6), 0.0, 1.0);
    out_color = vec4(v_color, (255.0 - 223.0 * s) / 255.0);
    out_depth = v_depth;
}
"""


def create_context():
    """A standalone moderngl context on EGL. Raises StudioError with the fix when EGL is missing."""
    import moderngl

    try:
        return moderngl.create_context(standalone=True, backend="egl")
    except Exception as exc:  # moderngl raises plain Exceptions for missing libraries
        raise StudioError(
            f"cannot open an EGL context for rendering ({exc}); install EGL/Mesa "
            "(Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri), or run scripts/setup.sh"
        ) from exc


def check_framebuffer_size(ctx, width: int, height: int) -> None:
    """Refuse a frame the GL implementation cannot hold, with one line, before allocating it."""
    limit = int(ctx.info.get("GL_MAX_RENDERBUFFER_SIZE", 16384))
    if not (1 <= width <= limit and 1 <= height <= limit):
        ctx.release()
        raise StudioError(f"cannot render {width}x{height} pixels; this renderer takes up to {limit} a side")


def renderer_name() -> str:
    """The OpenGL renderer string EGL gives (e.g. 'llvmpipe (LLVM 15.0.6, 256 bits)')."""
    ctx = create_context()
    try:
        return str(ctx.info.get("GL_RENDERER", "unknown"))
    finally:
        ctx.release()


def projection_from_intrinsics(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """OpenGL projection for an OpenCV pinhole camera, with image row 0 at framebuffer row 0.

    Args:
        K: [3, 3] intrinsics in pixels of a width x height image.
    Returns:
        [4, 4] column-major-ready matrix mapping OpenCV camera space to clip space.
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4), dtype=np.float64)
    P[0, 0] = 2.0 * fx / width
    P[0, 2] = 2.0 * cx / width - 1.0
    # Pixel y grows downwards and so does OpenCV's y; framebuffer row 0 is read first, so no flip.
    P[1, 1] = 2.0 * fy / height
    P[1, 2] = 2.0 * cy / height - 1.0
    P[2, 2] = (far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


class MeshRasterizer:
    """Rasterises one mesh topology, frame after frame, into normal, colour and depth images."""

    def __init__(self, faces: np.ndarray, vertex_colors: np.ndarray, *, width: int, height: int) -> None:
        """
        Args:
            faces: [F, 3] vertex indices.
            vertex_colors: [V, 3] uint8 colour of each vertex (flat per triangle, from its last vertex).
            width, height: output size in pixels.
        """
        self.width, self.height = int(width), int(height)
        self.num_vertices = int(vertex_colors.shape[0])
        self.ctx = create_context()
        ctx = self.ctx
        check_framebuffer_size(ctx, self.width, self.height)
        self.program = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.vbo = ctx.buffer(reserve=self.num_vertices * 6 * 4, dynamic=True)
        self.cbo = ctx.buffer(np.ascontiguousarray(vertex_colors, dtype=np.float32) / 255.0)
        self.ibo = ctx.buffer(np.ascontiguousarray(faces, dtype=np.int32))
        self.vao = ctx.vertex_array(
            self.program,
            [(self.vbo, "3f 3f", "in_position", "in_normal"), (self.cbo, "3f", "in_color")],
            index_buffer=self.ibo,
            index_element_size=4,
        )
        size = (self.width, self.height)
        self.fbo = ctx.framebuffer(
            color_attachments=[
                ctx.renderbuffer(size, components=4),
                ctx.renderbuffer(size, components=4),
                ctx.renderbuffer(size, components=1, dtype="f4"),
            ],
            depth_attachment=ctx.depth_renderbuffer(size),
        )

    def render_into(
        self,
        vertices: np.ndarray,
        normals: np.ndarray,
        K: np.ndarray,
        *,
        normal_out: np.ndarray,
        color_out: np.ndarray,
        depth_out: np.ndarray | None = None,
    ) -> None:
        """Render one frame into caller-owned buffers (no copies).

        Args:
            vertices: [V, 3] camera-space positions (OpenCV axes, metres).
            normals: [V, 3] camera-space unit normals.
            K: [3, 3] intrinsics for this output size.
            normal_out: [H, W, 4] uint8, receives the normal (rgb) and the coverage mask (a).
            color_out: [H, W, 4] uint8, receives the part colour (rgb) and the encoded depth (a).
            depth_out: optional [H, W] float32, receives metric depth (0 = background).
        """
        z = vertices[:, 2]
        in_front = z[z > 1e-3]
        zmin = float(in_front.min()) if in_front.size else 0.0
        zmax = float(z.max())
        near = max(zmin * 0.5, 1e-3) if in_front.size else 0.01
        proj = projection_from_intrinsics(K, self.width, self.height, near, zmax * 2.0 + 1.0)
        self.program["projection"].write(proj.T.astype("f4").tobytes())
        self.program["depth_range"].value = (zmin, zmax)
        self.vbo.write(np.concatenate([vertices, normals], axis=1).astype("f4", copy=False).tobytes())
        self.fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.vao.render()
        self.fbo.read_into(normal_out, components=4, attachment=0)
        self.fbo.read_into(color_out, components=4, attachment=1)
        if depth_out is not None:
            self.fbo.read_into(depth_out, components=1, attachment=2, dtype="f4")

    def release(self) -> None:
        self.ctx.release()


_ATTRIBUTE_VERTEX_SHADER = """
#version 330
uniform mat4 projection;
in vec3 in_position;  // camera space, OpenCV axes, metres
in vec2 in_attribute;
out vec2 v_attribute;
void main() {
    gl_Position = projection * vec4(in_position, 1.0);
    v_attribute = in_attribute;
}
"""

_ATTRIBUTE_FRAGMENT_SHADER = """
#version 330
in vec2 v_attribute;
layout(location = 0) out vec4 out_attribute;  // rg: the interpolated attribute, a: coverage
void main() {
    out_attribute = vec4(v_attribute, 0.0, 1.0);
}
"""


class AttributeRasterizer:
    """Rasterises a mesh with a smoothly interpolated float2 attribute per vertex (for example the
    pixel a vertex takes its colour from in a texture image) into an [H, W, 4] float32 image."""

    def __init__(self, faces: np.ndarray, num_vertices: int, *, width: int, height: int) -> None:
        self.width, self.height = int(width), int(height)
        self.num_vertices = int(num_vertices)
        self.ctx = create_context()
        ctx = self.ctx
        check_framebuffer_size(ctx, self.width, self.height)
        self.program = ctx.program(vertex_shader=_ATTRIBUTE_VERTEX_SHADER, fragment_shader=_ATTRIBUTE_FRAGMENT_SHADER)
        self.vbo = ctx.buffer(reserve=self.num_vertices * 3 * 4, dynamic=True)
        self.abo = ctx.buffer(reserve=self.num_vertices * 2 * 4, dynamic=True)
        self.ibo = ctx.buffer(np.ascontiguousarray(faces, dtype=np.int32))
        self.vao = ctx.vertex_array(
            self.program,
            [(self.vbo, "3f", "in_position"), (self.abo, "2f", "in_attribute")],
            index_buffer=self.ibo,
            index_element_size=4,
        )
        size = (self.width, self.height)
        self.fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(size, components=4, dtype="f4")],
            depth_attachment=ctx.depth_renderbuffer(size),
        )

    def set_attribute(self, attribute: np.ndarray) -> None:
        """The per-vertex attribute [V, 2] (kept until set again)."""
        self.abo.write(np.ascontiguousarray(attribute, dtype="f4").tobytes())

    def render_into(self, vertices: np.ndarray, K: np.ndarray, *, out: np.ndarray) -> None:
        """Render one frame: vertices [V, 3] camera space, K [3, 3]; out [H, W, 4] float32 receives
        the attribute (rg) and coverage (a, 0 or 1)."""
        z = vertices[:, 2]
        in_front = z[z > 1e-3]
        near = max(float(in_front.min()) * 0.5, 1e-3) if in_front.size else 0.01
        proj = projection_from_intrinsics(K, self.width, self.height, near, float(z.max()) * 2.0 + 1.0)
        self.program["projection"].write(proj.T.astype("f4").tobytes())
        self.vbo.write(np.ascontiguousarray(vertices, dtype="f4").tobytes())
        self.fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.vao.render()
        self.fbo.read_into(out, components=4, attachment=0, dtype="f4")

    def release(self) -> None:
        self.ctx.release()


def egl_platform_hint() -> None:
    """Prefer the surfaceless Mesa platform when no display is set (headless machines, CI)."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("EGL_PLATFORM", "surfaceless")
