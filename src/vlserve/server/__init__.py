"""The HTTP edge: the ASGI app and its lifespan, routes, HTTP protocol limits, API keys,
error rendering, metrics and logs, and running it all under uvicorn.

Everything that knows a web framework lives here; the layers below (gateway, engines,
media, analysis) import none.
"""
