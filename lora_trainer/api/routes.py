"""The routes under ``/lora-trainer/v1``: one thin function per step, each a call into ``Service``.

No step logic lives here: a route validates and confines its input, calls the Service (which queues long
steps as jobs on the one JobRunner the tab also uses) and shapes the answer. Long steps answer 202 with
the job's id and URL; ``GET /jobs/{id}`` reports progress and ETA.
"""

import dataclasses
import mimetypes
import time
from pathlib import Path
from typing import List, Literal, Optional

from fastapi import APIRouter, Body, Depends, File, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.requests import Request
from starlette.routing import Match

from .. import __version__, paths
from ..jobs import CANCELLED, FAILED, INTERRUPTED, RUNNING
from . import captions as C
from . import models as M
from . import uploads
from .responses import SafeJSONResponse, error_json, route_class
from .security import PREFIX, ApiError, ApiLimits, Roots, check_name, check_relative, within

ERRORS = {code: {"model": M.ErrorBody, "description": what} for code, what in (
    (400, "bad input"), (401, "authentication required"), (403, "path outside the server's roots"),
    (404, "not found"), (409, "conflicts with the current state"), (413, "too large"),
    (422, "request does not match the schema"))}
JOB_FILE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".json", ".jsonl"}
RESUMABLE = (INTERRUPTED, CANCELLED, FAILED)


def build_router(service, *, roots: Roots, limits: ApiLimits, auth_dep=None, auth_schemes=()) -> APIRouter:
    """Every route, bound to ``service``; ``auth_dep`` (security.auth_dependency) guards all of them."""
    router = APIRouter(prefix=PREFIX, route_class=route_class(limits), tags=["LoRA Trainer"],
                       dependencies=[Depends(auth_dep)] if auth_dep else [],
                       default_response_class=SafeJSONResponse, responses=ERRORS)
    runner = service.runner

    # ---- helpers ---------------------------------------------------------------------------------
    def job_ref(job_id: str) -> dict:
        st = runner.get(job_id) or {}
        return {"job": job_id, "status": st.get("status", "queued"), "url": f"{PREFIX}/jobs/{job_id}"}

    def job_state(job_id: str) -> dict:
        check_name(job_id, "job id")
        st = runner.get(job_id)
        if st is None:
            raise ApiError(404, f"no job {job_id!r}", "list the jobs first")
        paths.confine(runner.job_dir(job_id), [runner.root], f"job {job_id!r}:")
        return st

    def job_info(st: dict) -> dict:
        prog = st.get("progress") or None
        step, total = (prog or {}).get("step"), (prog or {}).get("total")
        percent = 100.0 * step / total if isinstance(step, (int, float)) and total else None
        eta = (prog or {}).get("eta")
        if not isinstance(eta, (int, float)):
            eta = None
            if st["status"] == RUNNING and st.get("started") and step and total:
                eta = (time.time() - st["started"]) * (total - step) / step
        if st["status"] != RUNNING:
            eta = 0.0 if st["status"] == "finished" else None
        state_dir = runner.job_dir(st["id"]) / "state"
        return {**st, "project": (st.get("config") or {}).get("project"), "percent": percent, "eta": eta,
                "resumable": st.get("kind") == "train" and st["status"] in RESUMABLE
                and (state_dir / "latest.json").is_file(),
                "url": f"{PREFIX}/jobs/{st['id']}"}

    def file_entry(path: Path, url: str) -> dict:
        s = path.stat()
        return {"name": path.name, "bytes": s.st_size, "modified": s.st_mtime, "url": url}

    def send_file(path: Path, download_name: str) -> FileResponse:
        media = mimetypes.guess_type(download_name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, filename=download_name)

    def confine_options(opts: dict, cls_name: str) -> dict:
        for key in M.PATH_FIELDS.get(cls_name, ()):
            if opts.get(key):
                opts[key] = str(roots.confine(opts[key], key))
        return opts

    def dataset(name: str) -> Path:
        service.project(name)
        return service.dataset_dir(name)

    # ---- server ----------------------------------------------------------------------------------
    @router.get("/info", response_model=M.Info, summary="Version, limits and the authentication in force")
    def info():
        return {"name": "LoRA Trainer", "version": __version__, "api": "v1", "auth": list(auth_schemes),
                "limits": limits.as_dict()}

    @router.get("/samplers", response_model=List[str],
                summary="The sampler names generate takes (the WebUI's in the WebUI); the first is the default")
    def samplers():
        return service.samplers()

    # ---- models a step can fetch -----------------------------------------------------------------
    @router.get("/models", response_model=List[M.ModelInfo],
                summary="The taggers and background models the store can fetch, and which are on disk")
    def list_models():
        return service.models_list()

    @router.post("/models/{model_id}/download", response_model=M.JobRef, status_code=202,
                 summary="Download a model as a job (progress in bytes; cancel keeps the partial file)")
    def download_model(model_id: str):
        return job_ref(service.download_model(model_id))

    # ---- projects --------------------------------------------------------------------------------
    @router.get("/projects", response_model=List[M.ProjectInfo], summary="List projects")
    def list_projects():
        return service.projects()

    @router.post("/projects", response_model=M.ProjectInfo, status_code=201, summary="Create a project")
    def create_project(body: M.ProjectCreate):
        return service.create_project(body.name, trigger=body.trigger, repeats=body.repeats)

    @router.get("/projects/{name}", response_model=M.ProjectInfo, summary="One project")
    def get_project(name: str):
        return service.project_info(name)

    @router.patch("/projects/{name}", response_model=M.ProjectInfo, summary="Change trigger word or repeats")
    def update_project(name: str, body: M.ProjectUpdate):
        return service.update_project(name, **M.given(body))

    @router.delete("/projects/{name}", response_model=M.Deleted, summary="Delete a project and its files")
    def delete_project(name: str):
        service.delete_project(name)
        return {"deleted": name}

    @router.get("/projects/{name}/train-config", response_model=M.TrainConfigOut,
                summary="The training options a run would use (preset, saved config, defaults)")
    def train_config(name: str):
        return {"config": dataclasses.asdict(service.train_config(name))}

    @router.get("/projects/{name}/disk", response_model=M.DiskUsage,
                summary="The project's disk use in bytes per category (source, dataset, outputs, intermediate "
                        "saves, resume state, caches, job logs, test copies in the WebUI's Lora folder)")
    def disk_usage(name: str):
        return service.disk_usage(name)

    @router.post("/projects/{name}/cleanup", response_model=M.DiskCleanupResult,
                 summary="Delete resume state, caches and test copies (or the categories named); final LoRA "
                         "files and source photos only when named")
    def cleanup(name: str, body: M.DiskCleanupRequest = Body(M.DiskCleanupRequest())):
        return service.cleanup(name, body.what)

    # ---- images ----------------------------------------------------------------------------------
    Where = Literal["source", "dataset"]

    @router.get("/projects/{name}/images", response_model=M.ImageList,
                summary="Images: uploaded originals (source) or the prepared training set (dataset)")
    def list_images(name: str, where: Where = Query("dataset")):
        return {"where": where, "images": service.images(name, where)}

    @router.post("/projects/{name}/images", response_model=M.ImportReport, status_code=201,
                 summary="Upload images, caption files or zip archives into the project's source/")
    def upload_images(name: str, files: List[UploadFile] = File(..., description="images, .txt captions, zips")):
        return uploads.import_files(service, name, files, limits)

    @router.post("/projects/{name}/images/import", response_model=M.ImportReport, status_code=201,
                 summary="Import a folder, image or zip already on the server (inside its roots)")
    def import_images(name: str, body: M.ImportRequest):
        return uploads.import_path(service, name, roots.confine(body.path, "path"), limits)

    @router.get("/projects/{name}/images/{image}", response_class=FileResponse, summary="Download one image",
                responses={200: {"content": {"image/png": {}}}})
    def get_image(name: str, image: str, where: Where = Query("dataset")):
        check_name(image, "image name")
        if image not in service.images(name, where):
            raise ApiError(404, f"no image {image!r} in the project's {where}", "list the images first")
        folder = service.image_folder(name, where)
        return send_file(within(folder / image, folder), image)

    @router.delete("/projects/{name}/images/{image}", response_model=M.Deleted,
                   summary="Delete an image (and its caption and mask)")
    def delete_image(name: str, image: str, where: Where = Query("dataset")):
        check_name(image, "image name")
        service.delete_image(name, image, where)
        return {"deleted": image}

    # ---- steps as jobs ---------------------------------------------------------------------------
    @router.post("/projects/{name}/preprocess", response_model=M.JobRef, status_code=202,
                 summary="Crop and remove backgrounds (and optionally auto-tag) source/ into the dataset")
    def preprocess(name: str, body: M.PreprocessRequest = Body(M.PreprocessRequest())):
        options = {"prepare": confine_options(M.given(body.prepare), "PrepareConfig")}
        if body.tag is not None:
            options["tag"] = confine_options(M.given(body.tag), "TagConfig")
        return job_ref(service.preprocess(name, options))

    @router.post("/projects/{name}/tag", response_model=M.JobRef, status_code=202,
                 summary="Auto-tag the dataset's images (captions written beside them)")
    def autotag(name: str, body: M.TagOptions = Body(M.TagOptions())):
        service.project(name)  # (Service.autotag reads the project's folder before checking the name)
        return job_ref(service.autotag(name, confine_options(M.given(body), "TagConfig")))

    @router.post("/projects/{name}/estimate", response_model=M.JobRef, status_code=202,
                 summary="Estimate the learning rate (D-Adaptation probe); the result holds the proposed lrs")
    def estimate(name: str, body: M.EstimateOptions = Body(M.EstimateOptions())):
        data = M.given(body)
        probe = {M.PROBE_FIELDS[k]: data.pop(k) for k in list(data) if k in M.PROBE_FIELDS}
        return job_ref(start_estimate(service, name, data, probe))

    @router.post("/projects/{name}/train", response_model=M.JobRef, status_code=202,
                 summary="Train a LoRA on the dataset; options not given come from the saved config and preset")
    def train(name: str, body: M.TrainOptions = Body(M.TrainOptions())):
        return job_ref(service.train(name, M.given(body)))

    @router.post("/projects/{name}/generate", response_model=M.JobRef, status_code=202,
                 summary="Test images with a LoRA from the outputs; fetch them from the job's files")
    def generate(name: str, body: M.GenerateRequest):
        req = M.given(body)
        prompts = req["prompts"]
        seeds = req.get("seeds") or [0]
        if not prompts or len(prompts) * len(seeds) > limits.max_generate_images:
            raise ApiError(400, f"give 1 to {limits.max_generate_images} images (prompts x seeds)",
                           "send fewer prompts or seeds per request")
        lora, weight = req.get("lora"), req.get("weight", 1.0)
        if lora:
            check_name(lora, "LoRA file name")
        else:
            lora, weight = lora_from_prompts(service, name, prompts, weight)
        return job_ref(service.generate(name, prompts, lora=lora, weight=weight, negative=req.get("negative", ""),
                                        seeds=tuple(seeds), steps=req.get("steps"),  # None: the model's (Service.sampling)
                                        cfg_scale=req.get("cfg_scale"), size=req.get("size", 0),
                                        sampler=req.get("sampler")))

    # ---- captions --------------------------------------------------------------------------------
    @router.get("/projects/{name}/captions", response_model=M.Captions,
                summary="Every dataset image's tags, and tag frequencies (optionally filtered)")
    def read_captions(name: str, filter: str = Query("", max_length=M.MAX_TEXT,
                                                     description="e.g. '1girl AND NOT hat'")):
        return C.read(dataset(name), filter)

    @router.patch("/projects/{name}/captions", response_model=M.EditResult,
                  summary="Set the tags of some images (saved at once; the old captions are backed up)")
    def edit_captions(name: str, body: M.CaptionEdit):
        return C.edit(dataset(name), body.captions)

    @router.post("/projects/{name}/captions/bulk", response_model=M.EditResult,
                 summary="Add, remove, replace, dedupe, trigger-first or sort tags on the selected images")
    def bulk_captions(name: str, body: M.BulkEdit):
        b = M.given(body)
        return C.bulk(dataset(name), b["action"], b.get("tags", []), b.get("to", ""), b.get("filter", ""),
                      b.get("position", "back"), b.get("trigger", ""), b.get("keep_tokens", 0),
                      b.get("by", "frequency"))

    @router.get("/projects/{name}/captions/suggestions", response_model=M.SuggestionList,
                summary="Cleanup suggestions (facial features, implied tags, background, missing subject)")
    def caption_suggestions(name: str, background: Optional[str] = Query(None, max_length=64),
                            trigger: str = Query("", max_length=M.MAX_TEXT)):
        return C.suggestions(dataset(name), background, trigger)

    @router.post("/projects/{name}/captions/suggestions/apply", response_model=M.CleanupResult,
                 summary="Apply approved suggestions, or all remove/add ones when none are listed")
    def apply_suggestions(name: str, body: M.SuggestionApply):
        chosen = None if body.suggestions is None else [
            {"image": s.image, "tag": s.tag, "action": s.action} for s in body.suggestions]
        return C.apply(dataset(name), chosen, body.background, body.trigger, body.keep_tokens,
                       tuple(body.skip_rules))

    # ---- jobs ------------------------------------------------------------------------------------
    @router.get("/jobs", response_model=List[M.JobInfo], summary="Jobs, oldest first (filter by project, status)")
    def list_jobs(project: Optional[str] = Query(None, max_length=64),
                  status: Optional[str] = Query(None, max_length=32)):
        out = []
        for st in runner.list():
            if paths.leads_out(runner.job_dir(st["id"]), [runner.root]):
                continue
            if project is not None and (st.get("config") or {}).get("project") != project:
                continue
            if status is not None and st["status"] != status:
                continue
            out.append(job_info(st))
        return out

    @router.get("/jobs/{job_id}", response_model=M.JobInfo, summary="A job's status, progress and ETA")
    def get_job(job_id: str):
        return job_info(job_state(job_id))

    @router.get("/jobs/{job_id}/log", response_model=M.JobLog,
                summary="The job's per-step log (step, loss, lr, d*lr, it/s), last records first cut")
    def job_log(job_id: str, tail: int = Query(200, ge=1, le=ApiLimits.max_log_records)):
        import json

        job_state(job_id)
        path = runner.job_dir(job_id) / "log.jsonl"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        records = []
        for line in lines[-min(tail, limits.max_log_records):]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return {"job": job_id, "total": len(lines), "records": records}

    @router.post("/jobs/{job_id}/cancel", response_model=M.Cancelled,
                 summary="Cancel a queued job, or stop a running one (it saves what it has)")
    def cancel_job(job_id: str):
        job_state(job_id)
        done = runner.cancel(job_id)
        return {"job": job_id, "cancelled": done, "status": runner.get(job_id)["status"]}

    @router.post("/jobs/{job_id}/resume", response_model=M.JobRef, status_code=202,
                 summary="Continue an interrupted, cancelled or failed training job from its saved state")
    def resume_job(job_id: str):
        info = job_info(job_state(job_id))
        if info["kind"] != "train":
            raise ApiError(409, f"job {job_id!r} is a {info['kind']} job", "only training jobs resume")
        if not info["resumable"]:
            raise ApiError(409, f"job {job_id!r} cannot resume (status {info['status']}, saved state: "
                                f"{'yes' if (runner.job_dir(job_id) / 'state' / 'latest.json').is_file() else 'no'})",
                           "a job resumes when it was interrupted, cancelled or failed after saving state")
        return job_ref(service.train(info["project"], resume_job=job_id))

    @router.get("/jobs/{job_id}/files", response_model=M.FileList,
                summary="Files a job wrote: generated images, samples, the LR plot and curve")
    def job_files(job_id: str):
        job_state(job_id)
        root = runner.job_dir(job_id)
        found = []
        for folder, prefix in ((root, ""), (root / "samples", "samples/")):
            if folder.is_dir():
                for p in paths.entries(folder, [root]):
                    if p.is_file() and not p.is_symlink() and p.suffix.lower() in JOB_FILE_EXTS \
                            and not p.name.startswith("."):
                        found.append(file_entry(p, f"{PREFIX}/jobs/{job_id}/files/{prefix}{p.name}"))
        return {"files": found}

    @router.get("/jobs/{job_id}/files/{file:path}", response_class=FileResponse, summary="Download a job's file",
                responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    def job_file(job_id: str, file: str):
        job_state(job_id)
        rel = check_relative(file, "job file")
        if len(rel.parts) > 2 or (len(rel.parts) == 2 and rel.parts[0] != "samples") \
                or rel.suffix.lower() not in JOB_FILE_EXTS:
            raise ApiError(404, f"no file {file!r} in the job", "list the job's files first")
        root = runner.job_dir(job_id)
        path = within(root / rel, root)
        if not path.is_file():
            raise ApiError(404, f"no file {file!r} in the job", "list the job's files first")
        return send_file(path, rel.name)

    # ---- outputs ---------------------------------------------------------------------------------
    @router.get("/projects/{name}/outputs", response_model=M.FileList, summary="The project's LoRA files")
    def list_outputs(name: str):
        return {"files": [{**o, "url": f"{PREFIX}/projects/{name}/outputs/{o['name']}"}
                          for o in service.outputs(name)]}

    @router.get("/projects/{name}/outputs/{file}", response_class=FileResponse, summary="Download a LoRA file",
                responses={200: {"content": {"application/octet-stream": {}}}})
    def download_output(name: str, file: str):
        check_name(file, "output file name")
        return send_file(service.output_path(name, file), file)

    @router.post("/projects/{name}/outputs/{file}/publish", response_model=M.Published,
                 summary="Use a LoRA file in the WebUI: copy it into its Lora folder under a unique name")
    def publish_output(name: str, file: str):
        check_name(file, "output file name")
        target = service.publish_output(name, file)
        return {"file": file, "path": str(target), "name": target.stem, "prompt": f"<lora:{target.stem}:1>"}

    # ---- anything else under our prefix: our JSON 404/405, behind the same auth -------------------
    async def not_found(request: Request):
        for route in router.routes:
            if route.path_format.startswith(PREFIX) and "{rest}" not in route.path_format:
                match, _ = route.matches(request.scope)
                if match == Match.PARTIAL:
                    return error_json(405, f"method {request.method} not allowed here", "see the OpenAPI schema")
        return error_json(404, f"no route {request.url.path}", "see the OpenAPI schema")

    base = route_class(limits)

    class Fallback(base):
        """Matches every path under our prefix, even those Starlette's ``path`` converter cannot (``.*``
        stops at a newline), so nothing under the prefix falls through to the host's handlers."""

        def matches(self, scope):
            match, child = super().matches(scope)
            path = scope.get("path", "")
            if match == Match.NONE and scope.get("type") == "http" and path.startswith(PREFIX + "/"):
                return Match.FULL, {"endpoint": self.endpoint, "path_params": {"rest": path[len(PREFIX) + 1:]}}
            return match, child

    router.add_api_route("/{rest:path}", not_found, include_in_schema=False, route_class_override=Fallback,
                         methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    return router


def lora_from_prompts(service, name: str, prompts: list, weight: float) -> tuple:
    """``<lora:NAME:W>`` in the prompts picks ``NAME.safetensors`` from the outputs (when 'lora' is not given)."""
    from ..generate import LORA_TAG

    for prompt in prompts:
        m = LORA_TAG.search(prompt)
        if m:
            file = f"{m.group(1)}.safetensors"
            check_name(file, "LoRA name")
            try:
                w = float(m.group(2)) if m.group(2) else weight
            except ValueError:
                raise ApiError(400, f"bad LoRA weight in {m.group(0)!r}", "write <lora:NAME:0.8>") from None
            service.output_path(name, file)  # 404 when the project has no such file
            return file, w
    return None, weight


def start_estimate(service, name: str, overrides: dict, probe: dict) -> str:
    """``Service.estimate`` with the probe's settings when the Service takes them (``probe=``)."""
    import inspect

    if "probe" in inspect.signature(service.estimate).parameters:
        return service.estimate(name, overrides, probe=probe or None)
    if probe:
        raise ApiError(400, "this version cannot change the probe's settings",
                       "leave out probe_optimizer, probe_max_steps, plateau_window and plateau_epsilon")
    return service.estimate(name, overrides)
