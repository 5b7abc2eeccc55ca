"""Results back into Blender: Gaussian-splat PLYs, turntables and test renders."""
