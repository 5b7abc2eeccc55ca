"""The add-on's file formats and numpy geometry, without Blender: nothing here imports bpy or mathutils.

Like the glTF add-on's ``io`` package, this is the half of the add-on a plain Python process can
run and test: what goes into a job folder and how results are found in one (``job_folder``,
``results``, ``media``), NeRF-synthetic cameras and transforms files (``nerf``, ``cameras``), the
surface points of a capture (``points``), and the PLY and OBJ files (``ply``, ``obj``). The Blender
side (``capture``, ``importers``, ``operators``, ``panel``) reads Blender data into numpy and calls
these functions.
"""
