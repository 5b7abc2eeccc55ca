"""The numbers every Gaussian rasterizer here follows (gsplat 1.5.3's): torch, native and the reference.

Plain module-level floats with no imports, because the Numba kernels (``native/kernels.py``) read
them as globals: Numba freezes a global's value into the compiled code, and its on-disk cache is
keyed by the kernel file only. After changing a value here, touch ``native/kernels.py`` (any edit
that changes its modification time) so that the cached kernels are compiled again.
"""

ALPHA_THRESHOLD = 1.0 / 255.0  # fragments with a smaller alpha are skipped (gsplat, 3DGS)
MAX_ALPHA = 0.999  # gsplat's cap on a single fragment's alpha (the original 3DGS code uses 0.99)
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before the fragment that would take T to or below this
# Tiles and pixel spans are found from the ellipse 0.5 d^T Q d <= ln(255 o) + BINNING_SLACK: the
# slack keeps float rounding from dropping a fragment whose alpha is just above 1/255; the exact
# per-fragment alpha test decides afterwards.
BINNING_SLACK = 1e-3
MAX_EXTENT_SIGMAS = 3.33  # cap on the screen radius in standard deviations (gsplat)
FOV_CLAMP_MARGIN = 0.3  # Jacobian clamp: the view's tan(half-FOV) widened by this fraction per side (gsplat)
