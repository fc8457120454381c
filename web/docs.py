"""The API docs page, rendered by Swagger UI from the copy shipped in PyPI's swagger-ui-bundle-v2 (no CDN)."""

from __future__ import annotations

from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from web.access import Scope, needs

ASSETS_PATH = "/static/swagger-ui"
SWAGGER_ASSETS = create_static_files_router(
    path=ASSETS_PATH, directories=[swagger_ui_path], include_in_schema=False, name="swagger-ui-assets",
    opt=needs(Scope.OPEN),  # the docs page is open, like /schema
)


def swagger_plugin() -> SwaggerRenderPlugin:
    """Swagger UI at /schema/docs with its scripts, styles and icon served by the appliance itself."""
    return SwaggerRenderPlugin(
        path="/docs", js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js", css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )
