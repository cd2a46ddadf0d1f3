"""The demo's web app (Starlette): one self-contained page and a plain HTTP API, every asset served locally.

Routes:

- ``GET /``: the page (``static/index.html``, ``app.js``, ``app.css``; no CDN, no web fonts);
- ``POST /api/super-resolve`` (a contract): multipart ``image`` plus form fields ``solver``,
  ``nfe``, ``rho``, ``seed`` (optional ``tile``, ``model``) -> ``image/png`` 4x the input, with
  ``X-Cresshift-NFE`` (network calls made), ``X-Cresshift-Seconds``, ``X-Cresshift-Grid``,
  ``X-Cresshift-Solver`` and ``X-Cresshift-Model`` headers; waits its turn in the queue;
- ``POST /api/jobs`` (same fields, or ``photo`` = a bundled photograph's name instead of
  ``image``) -> ``{"id": ...}``; ``GET /api/jobs/{id}`` -> state, progress, queue position,
  NFE, grid, seconds; ``GET /api/jobs/{id}/{sr,bicubic,lr}.png``; ``POST /api/jobs/{id}/cancel``;
- ``GET /api/config``: models, solvers, defaults, limits, bundled photographs;
  ``GET /api/photos/{name}/lr.png``: a bundled photograph's LR input.

Every error is HTTP 4xx (5xx for a server fault) with a one-line JSON body ``{"error": "..."}``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, Optional, Sequence

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import samples
from .jobs import Job, JobQueue, RequestError
from .service import (DEFAULT_MAX_PIXELS, DEFAULTS, GRIDS, MAX_NFE, MAX_UPLOAD_BYTES, ModelChoice, ModelStore, SROutcome,
                      SRRequest,
                      decode_image, demo_solvers, encode_png, parse_request, super_resolve)

__all__ = ["create_app", "STATIC"]

STATIC = Path(__file__).resolve().parent / "static"
_IMAGES = {"sr": "sr_png", "bicubic": "bicubic_png", "lr": "lr_png"}


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Demo:
    """The app's state: the model store, the job queue and the pixel limit; one method per route."""

    def __init__(self, store: ModelStore, jobs: JobQueue, max_pixels: int) -> None:
        self.store, self.jobs, self.max_pixels = store, jobs, max_pixels

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def config(self, request: Request) -> Response:
        photos = [{"name": p.name, "title": p.title, "credit": p.credit} for p in samples.BUNDLED_PHOTOS
                  if p.path.is_file()]
        return JSONResponse({"models": self.store.names, "solvers": list(demo_solvers()), "defaults": DEFAULTS,
                             "grids": list(GRIDS), "max_nfe": MAX_NFE, "max_pixels": self.max_pixels, "scale": 4, "photos": photos})

    async def photo_lr(self, request: Request) -> Response:
        lr, _ = self._photo(request.path_params["name"])
        return Response(encode_png(lr), media_type="image/png")

    def _photo(self, name: str) -> tuple[Any, Any]:
        from ..data.io import bicubic_down

        try:
            photo = samples.find_photo(name)
        except ValueError as err:
            raise RequestError(str(err), status=404) from None
        hr = photo.hr()
        hr = hr[:, : hr.shape[1] // 4 * 4, : hr.shape[2] // 4 * 4]
        return bicubic_down(hr, 4), hr

    async def _submit(self, request: Request) -> tuple[Job, SRRequest]:
        """Validate the multipart request and queue its run (RequestError on bad input)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
            raise RequestError(f"the upload is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MB", status=413)
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as err:
            raise RequestError(f"expected a multipart/form-data body: {str(err).splitlines()[0] if str(err) else err}")
        req = parse_request(form, self.store.names)
        upload, photo = form.get("image"), form.get("photo")
        hr = None
        if upload is not None and not isinstance(upload, str):
            data = await upload.read()
            lr = await anyio.to_thread.run_sync(lambda: decode_image(data, max_pixels=self.max_pixels,
                                                                     tiled=req.tile is not None))
        elif isinstance(photo, str) and photo:
            lr, hr = await anyio.to_thread.run_sync(self._photo, photo)
        else:
            raise RequestError("send the image as the multipart file field 'image'")
        return self.jobs.submit(lambda job: super_resolve(self.store, req, lr, job, hr=hr)), req

    async def super_resolve(self, request: Request) -> Response:
        job, req = await self._submit(request)
        await anyio.to_thread.run_sync(job.finished.wait)
        if job.state != "done":
            return _error(job.error or job.state, job.status)
        out: SROutcome = job.result
        headers = {"X-Cresshift-NFE": str(out.nfe), "X-Cresshift-Seconds": f"{out.seconds:.3f}",
                   "X-Cresshift-Grid": ",".join(f"{t:.6g}" for t in out.grid), "X-Cresshift-Solver": req.solver,
                   "X-Cresshift-Model": req.model, "Content-Disposition": 'inline; filename="cresshift_sr.png"'}
        return Response(out.sr_png, media_type="image/png", headers=headers)

    async def create_job(self, request: Request) -> Response:
        job, _ = await self._submit(request)
        return JSONResponse({"id": job.id, "state": job.state}, status_code=202)

    def _job(self, request: Request) -> Job:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            raise RequestError("no such job (finished jobs are kept for a while only)", status=404)
        return job

    async def job_status(self, request: Request) -> Response:
        job = self._job(request)
        body: dict[str, Any] = {"id": job.id, "state": job.state, "done": job.done, "total": job.total,
                                "ahead": self.jobs.ahead_of(job) if job.state == "queued" else 0}
        if job.state == "done":
            out: SROutcome = job.result
            body.update(nfe=out.nfe, grid=list(out.grid), seconds=out.seconds, width=out.width, height=out.height,
                        psnr_y=out.psnr_y, bicubic_psnr_y=out.bicubic_psnr_y)
        elif job.error:
            body.update(error=job.error, status=job.status)
        return JSONResponse(body)

    async def job_image(self, request: Request) -> Response:
        job = self._job(request)
        kind = request.path_params["kind"]
        if kind not in _IMAGES:
            raise RequestError(f"no image {kind!r}; valid: {', '.join(_IMAGES)}", status=404)
        if job.state != "done":
            raise RequestError(f"the job is {job.state}, it has no images", status=409)
        return Response(getattr(job.result, _IMAGES[kind]), media_type="image/png")

    async def cancel_job(self, request: Request) -> Response:
        job = self._job(request)
        self.jobs.cancel(job)
        return JSONResponse({"id": job.id, "state": job.state})


async def _request_error(request: Request, exc: Exception) -> Response:
    return _error(str(exc).splitlines()[0], getattr(exc, "status", 400))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(str(exc.detail).splitlines()[0], exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return _error(f"internal error: {type(exc).__name__}{': ' + text if text else ''}", 500)


def create_app(models: Sequence[ModelChoice], *, device: Any = "cpu", dtype: Optional[Any] = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, max_waiting: int = 16) -> Starlette:
    """The demo app offering ``models`` (the first is the default) on ``device``; one run at a time."""
    demo = _Demo(ModelStore(models, device=device, dtype=dtype), JobQueue(max_waiting=max_waiting), max_pixels)
    routes = [
        Route("/", demo.index),
        Route("/api/config", demo.config),
        Route("/api/photos/{name}/lr.png", demo.photo_lr),
        Route("/api/super-resolve", demo.super_resolve, methods=["POST"]),
        Route("/api/jobs", demo.create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", demo.job_status),
        Route("/api/jobs/{job_id}/{kind}.png", demo.job_image),
        Route("/api/jobs/{job_id}/cancel", demo.cancel_job, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        demo.jobs.close()
    app = Starlette(routes=routes, exception_handlers={RequestError: _request_error, HTTPException: _http_error,
                                                       Exception: _server_error}, lifespan=lifespan)
    app.state.demo = demo
    return app
