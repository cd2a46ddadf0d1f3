"""The local web demo (``cresshift demo``) and the bundled photographs of the first run.

``samples`` needs only the core install; ``app`` (Starlette, served by uvicorn) needs the
``demo`` extra: ``pip install -e ".[demo]"``.
"""
