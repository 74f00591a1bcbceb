"""A Gemini Developer API key behind a gateway (``GENAI_BASE_URL``): the finished video names its
file on Google's host, as Google does; it is fetched from the gateway, paid once, delivered once."""

from __future__ import annotations

from pathlib import Path

from services.jobs import JobAddress, JobOutcome, JobService
from services.queue import JobExecutor
from services.video import VideoRequest
from tests.fakes import FakeGenAI, FakeOpenRouter

Upstreams = tuple[FakeOpenRouter, FakeGenAI]
ADDRESS = JobAddress(platform="telegram", chat_id="42", user_key="telegram:7")


async def test_developer_video_behind_a_gateway_is_downloaded_from_it_and_delivered_once(
    tmp_path: Path, database: str, upstreams: Upstreams
) -> None:
    _, gateway = upstreams  # the connectors are configured with the fake as GENAI_BASE_URL, Developer mode
    delivered: list[JobOutcome] = []

    async def deliver(outcome: JobOutcome) -> None:
        delivered.append(outcome)

    executor = JobExecutor(JobService(tmp_path / "media", lease_seconds=30), deliver)
    job_id = await executor.jobs.create_video_job(ADDRESS, VideoRequest(prompt="a cat surfing", duration_seconds=4))
    await executor.execute(job_id)

    [operation] = gateway.operations.values()
    [file_id] = operation.file_ids
    assert gateway.video_uri(file_id).startswith("https://generativelanguage.googleapis.com/v1beta/files/")
    assert len(gateway.video_generation_requests) == 1
    [download] = gateway.download_requests
    assert download.path == f"/v1beta/files/{file_id}:download"
    assert [o.job_id for o in delivered] == [job_id]
    [outcome] = delivered
    assert outcome.ok and outcome.media_path is not None
    assert outcome.media_path.read_bytes() == gateway.files[file_id]
