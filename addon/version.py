"""Versions the add-on checks against the service (kept equal to blender_manifest.toml by scripts/build_extension.py)."""

ADDON_VERSION = "0.1.0"
# The service API this add-on speaks (GET /api/v1/health answers its own "api_version").
API_VERSION = 1
