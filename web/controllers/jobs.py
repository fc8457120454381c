"""/jobs: the scheduled jobs, their last runs, and running one now (admin)."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT

from web.access import Scope, needs
from web.errors import problem
from web.schemas import JobOut, JobRunOut
from web.services import Services


def job_out(services: Services, name: str) -> JobOut:
    jobs = services.jobs
    history = [JobRunOut.of(run) for run in jobs.runs.history(name, 5)]
    return JobOut(name, jobs.specs[name].schedule, jobs.next_run(name), jobs.running(name), history)


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    opt = needs(Scope.SERVER)

    @get("/", operation_id="listJobs", sync_to_thread=True)
    def list_jobs(self, state: State) -> list[JobOut]:
        """Every job with its schedule, next run and its last runs (time, duration, outcome)."""
        return [job_out(state.services, name) for name in state.services.jobs.specs]

    @post("/{name:str}/run", operation_id="runJob", opt=needs(Scope.ADMIN), status_code=HTTP_202_ACCEPTED,
          sync_to_thread=True)
    def run_job(self, state: State, name: str) -> Response[JobOut]:
        """Start a run now in the background (202); 409 while that job is already running."""
        services: Services = state.services
        if not services.jobs.trigger(name):
            return problem(HTTP_409_CONFLICT, "job-running", f"job {name} is already running")
        return Response(job_out(services, name), status_code=HTTP_202_ACCEPTED)
