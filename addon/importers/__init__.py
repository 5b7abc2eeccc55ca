"""Results back into Blender: Gaussian-splat PLYs (``gaussians``), turntables and test renders (``turntable``),
whole result folders (``results``), and one importer per job kind (``gaussian_job``, ``texture_job``, ``text3d_job``)."""
