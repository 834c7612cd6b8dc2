"""From a finished job to a served model: evaluation jobs (recorded on the version they
score), and for a job that registers its model, the gate, the registration with its lineage,
and the canary rollout to a deployment. Each step is an event in the job's log."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import logging
import tarfile
from collections.abc import AsyncIterator
from typing import Any

from stratus.control.controller import Controller
from stratus.errors import BadRequest, StratusError
from stratus.evaluation.gate import judge, parse_gates
from stratus.jobs.fold import TERMINAL, JobState
from stratus.jobs.request import JobRequest, Registration
from stratus.jobs.service import JobService
from stratus.models.registry import ModelRef, parse_version
from stratus.models.service import Lineage, ModelPushRequest, ModelService
from stratus.spec import CodeRef, DeploymentPatch, RolloutStrategy
from stratus.store.blobs import NamespaceBlobs

log = logging.getLogger("stratus.jobs")

EVALUATE_ENTRYPOINT = "stratus.runtime.evaluate:evaluate_job"
BASELINE_TIMEOUT_S = 3600.0


def _empty_bundle() -> bytes:
    """The code of an evaluation of a version no job trained (nothing to import)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT):
        pass
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def next_version(existing: list[str]) -> str:
    """The latest semantic version's next minor (1.0.0 first)."""
    parsed = sorted(parse_version(version) for version in existing)
    if not parsed:
        return "1.0.0"
    major, minor, _ = parsed[-1]
    return f"{major}.{minor + 1}.0"


class Promotion:
    """Hooked on the job service's ``on_finished``."""

    def __init__(self, jobs: JobService, models: ModelService, controller: Controller,
                 blobs: NamespaceBlobs, max_blob_bytes: int) -> None:
        self.jobs = jobs
        self.models = models
        self.controller = controller
        self.blobs = blobs
        self.max_blob_bytes = max_blob_bytes
        self._waiting: dict[str, list[asyncio.Future[str]]] = {}
        jobs.on_finished.append(self.finished)

    # -- evaluation jobs ------------------------------------------------------------------
    async def evaluate(self, namespace: str, model: str, dataset: str, split: str,
                       by: str) -> dict[str, Any]:
        """Submit a job that scores ``model`` (name@version or name@stage) on a split; it runs
        with the code of the job that trained the model, so a torch class can be rebuilt."""
        ref = ModelRef.parse(model)
        record = ref.resolve(await asyncio.to_thread(self.models.store.versions, namespace,
                                                     ref.name))
        bundle = await self._bundle_of(namespace, record.meta)
        request = JobRequest.model_validate({
            "code": CodeRef(bundle=bundle, entrypoint=EVALUATE_ENTRYPOINT).model_dump(),
            "models": [f"{ref.name}@{record.version}"], "datasets": [dataset],
            "params": {"model": ref.name, "dataset": dataset, "split": split}})
        layout = await asyncio.to_thread(self._dataset_layout, namespace, dataset)
        assert self.jobs.datasets is not None
        self.jobs.datasets.check_split(layout, split)  # 404 now, not a failed job later
        return await self.jobs.submit(namespace, request, by)

    def _dataset_layout(self, namespace: str, dataset: str) -> dict[str, Any]:
        if self.jobs.datasets is None:
            raise BadRequest("this server keeps no datasets")
        return self.jobs.datasets.resolve(namespace, dataset)

    async def _bundle_of(self, namespace: str, meta: dict[str, Any]) -> str:
        job_id = (meta.get("lineage") or {}).get("job")
        if job_id:
            trained = await asyncio.to_thread(self.jobs.log.job, namespace, str(job_id))
            bundle = ((trained.spec.get("code") or {}).get("bundle") if trained else None)
            if bundle and await asyncio.to_thread(self.blobs.visible, namespace, str(bundle)):
                return str(bundle)
        data = _empty_bundle()
        digest = hashlib.sha256(data).hexdigest()
        await self.blobs.keep(namespace, digest, _once(data), self.max_blob_bytes)
        return digest

    async def wait(self, namespace: str, job_id: str) -> JobState:
        """The job once it has ended (and what follows its end is done)."""
        state = await self.jobs.state(namespace, job_id)
        if state.status not in TERMINAL:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(job_id, []).append(future)
            state = await self.jobs.state(namespace, job_id)  # it may have ended meanwhile
            if state.status not in TERMINAL:
                await future
                state = await self.jobs.state(namespace, job_id)
        return state

    # -- the hook -------------------------------------------------------------------------
    async def finished(self, namespace: str, job_id: str, status: str) -> None:
        try:
            state = await self.jobs.state(namespace, job_id)
            code = state.spec.get("code") or {}
            if status == "succeeded" and code.get("entrypoint") == EVALUATE_ENTRYPOINT:
                await self._record_evaluation(namespace, state)
            elif status == "succeeded" and state.spec.get("register"):
                await self._promote(namespace, state,
                                    Registration.model_validate(state.spec["register"]))
        except Exception:
            log.exception("job %s/%s: what follows its end failed", namespace, job_id)
        finally:
            for future in self._waiting.pop(job_id, []):
                if not future.done():
                    future.set_result(status)

    async def _record_evaluation(self, namespace: str, state: JobState) -> None:
        evaluation = state.evaluation
        if not evaluation or not evaluation.get("model"):
            return
        name, _, version = str(evaluation["model"]).partition("@")
        entry = {**evaluation, "job": state.id, "at": state.ended_at}
        await asyncio.to_thread(self.models.store.add_evaluation, namespace, name, version, entry)

    # -- gate, registration, rollout ------------------------------------------------------
    async def _append(self, namespace: str, job_id: str, kind: str, data: dict[str, Any]) -> None:
        await self.jobs.writer.append(namespace, job_id, kind, data)

    async def _baseline(self, namespace: str, state: JobState, registration: Registration,
                        evaluation: dict[str, Any]) -> dict[str, Any] | None:
        """The version in ``gate_vs`` and its metrics on the same dataset version and split,
        evaluated now if it never was. None: no version holds that stage."""
        assert registration.gate_vs is not None
        versions = await asyncio.to_thread(self.models.store.versions, namespace,
                                           registration.name)
        held = [v for v in versions if v.stage == registration.gate_vs]
        if not held:
            return None
        record = max(held, key=lambda v: v.promoted_at)
        for entry in record.meta.get("evaluations", []):
            if (entry.get("dataset"), entry.get("split")) == (evaluation["dataset"],
                                                              evaluation["split"]):
                return {"version": record.version, "metrics": entry["metrics"],
                        "job": entry.get("job")}
        submitted = await self.evaluate(namespace, f"{registration.name}@{record.version}",
                                        str(evaluation["dataset"]), str(evaluation["split"]),
                                        by=f"gate of {state.id}")
        async with asyncio.timeout(BASELINE_TIMEOUT_S):
            ended = await self.wait(namespace, submitted["id"])
        if ended.status != "succeeded" or not ended.evaluation:
            raise BadRequest(f"the baseline {registration.name}@{record.version} could not be "
                             f"evaluated (job {ended.id}: {ended.status}: {ended.error})")
        return {"version": record.version, "metrics": ended.evaluation["metrics"],
                "job": ended.id}

    async def _promote(self, namespace: str, state: JobState, registration: Registration) -> None:
        try:
            verdict = await self._judge(namespace, state, registration)
        except StratusError as exc:
            verdict = {"passed": False, "reasons": [exc.message]}
        await self._append(namespace, state.id, "GateJudged", verdict)
        if not verdict["passed"]:
            return
        try:
            version = await self._register(namespace, state, registration, verdict)
        except StratusError as exc:
            await self._append(namespace, state.id, "GateJudged",
                               {**verdict, "passed": False,
                                "reasons": [f"registration failed: {exc.message}"]})
            return
        if registration.deploy is not None:
            await self._roll_out(namespace, state.id, registration, version)

    async def _judge(self, namespace: str, state: JobState,
                     registration: Registration) -> dict[str, Any]:
        if state.model is None:
            raise BadRequest("the job saved no model (ctx.save_model)")
        evaluation = state.evaluation
        gated = bool(registration.gate) or registration.gate_vs is not None
        if evaluation is None:
            if gated:
                raise BadRequest("the job's model was not evaluated: nothing to judge")
            return {"passed": True, "reasons": [], "candidate": None}
        gates = parse_gates(registration.gate, evaluation.get("task"))
        baseline = None
        if registration.gate_vs is not None:
            baseline = await self._baseline(namespace, state, registration, evaluation)
        verdict = judge(gates, evaluation["metrics"],
                        None if baseline is None else baseline["metrics"], registration.tolerance)
        return {**verdict.to_dict(), "candidate": evaluation["metrics"],
                "dataset": evaluation["dataset"], "split": evaluation["split"],
                "baseline": baseline}

    async def _register(self, namespace: str, state: JobState, registration: Registration,
                        verdict: dict[str, Any]) -> str:
        model = state.model or {}
        existing = [v.version for v in await asyncio.to_thread(
            self.models.store.versions, namespace, registration.name)]
        version = registration.version or next_version(existing)
        meta = model.get("meta") or {}
        baseline = verdict.get("baseline") or {}
        evaluation = state.evaluation
        body = ModelPushRequest(
            version=version, format=model["format"], files=model["files"],
            stage=registration.stage, framework=model.get("framework"), task=model.get("task"),
            signature=model.get("signature"),
            parameters=dict(state.params),
            metrics=(evaluation or {}).get("metrics") or {},
            lineage=Lineage(dataset=(evaluation or {}).get("dataset") or next(
                iter(meta.get("datasets") or []), None), job=state.id,
                parent=baseline.get("version")),
            tags={"experiment": state.experiment} if state.experiment else {},
            trusted_pickle=model["format"] == "pickle" and bool(meta.get("trusted_pickle")),
            preprocessing=model.get("preprocessing"),
            module={"class_path": meta.get("class_path"),
                    "init_kwargs": meta.get("init_kwargs") or {}}
            if model.get("framework") == "torch" else None,
            evaluations=[{**evaluation, "job": state.id, "at": state.ended_at}]
            if evaluation else [])
        record = await asyncio.to_thread(self.models.push, namespace, registration.name, body)
        followed = await self.controller.follow_model(namespace, registration.name)
        await self._append(namespace, state.id, "ModelRegistered", {
            "name": registration.name, "version": record.version, "stage": record.stage,
            "deployments_updated": followed})
        return record.version

    async def _roll_out(self, namespace: str, job_id: str, registration: Registration,
                        version: str) -> None:
        target = registration.deploy
        assert target is not None
        ref = f"{registration.name}@{version}"
        try:
            view = await self.controller.patch(
                namespace, target.deployment, DeploymentPatch(models=[ref]),
                RolloutStrategy(canary=target.canary, step=target.step,
                                interval_s=target.interval_s))
        except StratusError as exc:
            await self._append(namespace, job_id, "RolloutStarted", {
                "deployment": target.deployment, "model": ref, "error": exc.message})
            return
        await self._append(namespace, job_id, "RolloutStarted", {
            "deployment": target.deployment, "model": ref, "canary": target.canary,
            "revision": view.get("revision")})
